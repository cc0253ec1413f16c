"""What the host project points WEBHOOKS_MODEL_HOOKS at."""


def is_not_draft(order, action: str) -> bool:
    """Drafts are private to the shop: their saves send nothing."""
    return order.status != "draft"
