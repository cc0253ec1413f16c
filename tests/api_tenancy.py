"""The host's side of the customers' API in tests: a user's tenant is named by its username
("acme-..." users act for tenant "acme"); a user named "nobody" has none (refused)."""


def tenant_for_request(request) -> str | None:
    """WEBHOOKS_API_TENANT of the test settings: the part of the username before the first '-'."""
    username = request.user.get_username()
    if username == "nobody":
        return None
    return username.split("-", 1)[0]
