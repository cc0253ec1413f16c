"""Which tenant a request acts for: the host's function named in WEBHOOKS_API_TENANT.

The host keeps its own authentication (whatever its DRF DEFAULT_AUTHENTICATION_CLASSES
authenticate); this module only maps an authenticated request to a tenant string. Without the
setting, or when the function answers None, the request is refused: the API never guesses a
tenant, because a wrong guess would show one customer another's webhooks.
"""

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from endpoints.app_settings import webhook_settings

NOT_CONFIGURED = (
    "The webhooks API is not enabled: WEBHOOKS_API_TENANT is not configured. Set it in the host's settings "
    "to the dotted path of a function (request) -> tenant string, or None to refuse."
)
NO_TENANT = "This account has no webhooks tenant; the host's WEBHOOKS_API_TENANT function refused it."

# The attribute of the (DRF) request holding the resolved tenant.
TENANT_ATTRIBUTE = "webhooks_tenant"


def tenant_function() -> Callable | None:
    """The function WEBHOOKS_API_TENANT names (a dotted path), or None when unset."""
    configured = webhook_settings.API_TENANT
    if not configured:
        return None
    try:
        return import_string(configured)
    except ImportError as exc:
        raise ImproperlyConfigured(f"WEBHOOKS_API_TENANT = {configured!r} cannot be imported: {exc}") from exc


def request_tenant(request) -> str:
    """The tenant this request acts for, resolved by HasTenant before the view runs."""
    return getattr(request, TENANT_ATTRIBUTE)


class HasTenant(BasePermission):
    """Authenticated (by the host's DRF authentication) and mapped to a tenant.

    Unauthenticated requests get DRF's 401/403 "not authenticated"; an unconfigured API or a
    request the function maps to None gets 403 with a message saying which.
    """

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers NotAuthenticated
        function = tenant_function()
        if function is None:
            raise PermissionDenied(NOT_CONFIGURED)
        tenant = function(request)
        if tenant is None:
            raise PermissionDenied(NO_TENANT)
        if not isinstance(tenant, str):
            raise ImproperlyConfigured(
                f"WEBHOOKS_API_TENANT function returned {type(tenant).__name__}; it must return a str or None"
            )
        setattr(request, TENANT_ATTRIBUTE, tenant)
        return True
