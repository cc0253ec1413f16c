"""Which state-changing routes need which Django permission, when the host turns on
WEBHOOKS_API_CHECK_PERMISSIONS: the permission admin requires for the same action.

Off (the default), the host's tenant function alone decides what a request may do: a host's
customers are usually not Django staff holding model permissions. On, each route below also
needs its permission, read from the table admin's actions read (deliveries/permissions.py);
a request without it is answered 403 `{"detail": "..."}` naming the permission, and changes
nothing. It is checked before the view runs (before an Idempotency-Key could replay a stored
answer), except for what only the validated body and the object tell (CHANGED_BY_BODY).
"""

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from endpoints.app_settings import webhook_settings

from ..permissions import endpoint_change_operations, permission_of, user_may

__all__ = [
    "ROUTE_OPERATIONS",
    "HasOperationPermission",
    "require",
    "require_endpoint_change",
    "route_operations",
    "route_permissions",
]

# Changing an endpoint (PUT, PATCH) is admin's change form, or its Enable/Disable actions, or
# a rotation: which of them depends on the body and the endpoint (endpoint_change_operations).
CHANGED_BY_BODY = "endpoint_change"
CHANGED_BY_BODY_NOTE = (
    "endpoints.change_endpoint to change fields; endpoints.enable_disable_endpoint to change is_active "
    "(alone, when nothing else is sent); also endpoints.rotate_secret to switch signature_scheme between a "
    "shared secret and standard_ed25519"
)

# (view class name, HTTP method) -> the operations of deliveries/permissions.py it is.
# Every route that changes state is here (tests/test_api_permissions.py checks that no unsafe
# method of the API is missing).
ROUTE_OPERATIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("EndpointList", "POST"): ("add_endpoint",),
    ("EndpointDetail", "PUT"): (CHANGED_BY_BODY,),
    ("EndpointDetail", "PATCH"): (CHANGED_BY_BODY,),
    ("EndpointDetail", "DELETE"): ("delete_endpoint",),
    ("EndpointRotateSecret", "POST"): ("rotate_secret",),
    ("EndpointTestEvent", "POST"): ("send_test_event",),
    ("EndpointReplay", "POST"): ("replay_delivery",),
    ("DeliveryRetry", "POST"): ("retry_delivery",),
    ("DeliveryCancel", "POST"): ("cancel_delivery",),
}


def route_operations(view_class: type, method: str) -> tuple[str, ...]:
    """The operations a request `method` to `view_class` is (empty for reads)."""
    return ROUTE_OPERATIONS.get((view_class.__name__, method.upper()), ())


def route_permissions(view_class: type, method: str) -> str | None:
    """What the route needs, as the schema says it (None: nothing beyond the tenant)."""
    operations = route_operations(view_class, method)
    if CHANGED_BY_BODY in operations:
        return CHANGED_BY_BODY_NOTE
    return " and ".join(permission_of(operation) for operation in operations) or None


def require(request, *operations: str) -> None:
    """Refuse (403) unless the request's user holds the permission of every operation; nothing
    is checked while WEBHOOKS_API_CHECK_PERMISSIONS is off."""
    if not webhook_settings.API_CHECK_PERMISSIONS:
        return
    missing = [permission_of(operation) for operation in operations if not user_may(request.user, operation)]
    if missing:
        named = " and ".join(missing)
        raise PermissionDenied(
            f"This needs the permission{'s' if len(missing) > 1 else ''} {named}, which your account does not have."
        )


def require_endpoint_change(request, endpoint, values: dict, active: bool | None) -> None:
    """For PUT and PATCH of an endpoint, once the body is valid: the permissions admin would
    require for the same change (endpoint_change_operations)."""
    require(request, *endpoint_change_operations(endpoint, values, active))


class HasOperationPermission(BasePermission):
    """The permission of the route's operation (ROUTE_OPERATIONS), when the host checks them."""

    def has_permission(self, request, view) -> bool:
        operations = route_operations(type(view), request.method)
        require(request, *(operation for operation in operations if operation != CHANGED_BY_BODY))
        return True
