"""Which Django permission each state-changing operation needs: one table, read by admin's
actions, the operator commands' `--as-user`, and the customers' API when the host turns on
WEBHOOKS_API_CHECK_PERMISSIONS (deliveries/api/permissions.py), so they cannot drift apart.

The operation names are the ones admin's `@admin.action(permissions=[...])` use, so an action's
permission name, its `has_<name>_permission` method and its entry here read the same.
"""

from endpoints.signature_formats import SignatureScheme

__all__ = [
    "OPERATION_PERMISSIONS",
    "endpoint_change_operations",
    "permission_of",
    "switches_key_kind",
    "user_may",
]

OPERATION_PERMISSIONS: dict[str, str] = {
    # Django's own model permissions, as ModelAdmin checks them for its add, change and delete views.
    "add_endpoint": "endpoints.add_endpoint",
    "change_endpoint": "endpoints.change_endpoint",
    "delete_endpoint": "endpoints.delete_endpoint",
    # The operators' permissions (Meta.permissions of Endpoint and Delivery).
    "enable_disable_endpoint": "endpoints.enable_disable_endpoint",
    "rotate_secret": "endpoints.rotate_secret",
    "send_test_event": "endpoints.send_test_event",
    "verify_endpoint": "endpoints.verify_endpoint",
    "retry_delivery": "deliveries.retry_delivery",
    "replay_delivery": "deliveries.replay_delivery",
    "cancel_delivery": "deliveries.cancel_delivery",
}


def permission_of(operation: str) -> str:
    """The "app_label.codename" permission `operation` needs (KeyError for an unknown one)."""
    return OPERATION_PERMISSIONS[operation]


def user_may(user, operation: str) -> bool:
    """Whether `user` is active and holds the permission of `operation` (superusers hold all)."""
    return bool(getattr(user, "is_active", False) and user.has_perm(permission_of(operation)))


def switches_key_kind(stored_scheme: str, new_scheme: str) -> bool:
    """Whether changing the signature scheme moves between a shared secret and an ed25519 key
    pair: Endpoint.save() then rotates in a key of the new kind, so the change is a rotation."""
    key_pair = SignatureScheme.STANDARD_ED25519
    return bool(new_scheme) and (new_scheme == key_pair) != (stored_scheme == key_pair)


def endpoint_change_operations(endpoint, values: dict, active: bool | None) -> list[str]:
    """The operations a change of `endpoint` amounts to, as admin counts them: setting the fields
    of `values` (or saving with nothing changed) is change_endpoint; switching `is_active` to
    `active` is enable_disable_endpoint (admin's Enable and Disable actions); a signature scheme
    of the other key kind is rotate_secret as well (admin's change form refuses it without)."""
    switches_state = active is not None and active != endpoint.is_active
    operations = []
    if values or not switches_state:
        operations.append("change_endpoint")
    if switches_state:
        operations.append("enable_disable_endpoint")
    if switches_key_kind(endpoint.signature_scheme, values.get("signature_scheme", "")):
        operations.append("rotate_secret")
    return operations
