"""What is sent: events, deliveries and attempts. `from deliveries import publish`."""

__all__ = ["IdempotencyConflict", "PublishError", "publish", "publish_many", "register_model_hook"]


def __getattr__(name: str):
    # Imported lazily: this package is imported while Django loads apps, before models exist.
    if name == "register_model_hook":
        from . import hooks

        return hooks.register_model_hook
    if name in __all__:
        from . import publishing

        return getattr(publishing, name)
    raise AttributeError(f"module 'deliveries' has no attribute {name!r}")
