"""The host's side of the customers' webhooks API: which tenant (shop account) a request acts for."""

# This shop's users and the accounts they manage (a real shop would read its own membership table).
ACCOUNTS = {"alice": "acme"}


def tenant_for_request(request) -> str | None:
    """WEBHOOKS_API_TENANT: the account of the logged-in user; None (refused) for anyone else."""
    return ACCOUNTS.get(request.user.get_username())
