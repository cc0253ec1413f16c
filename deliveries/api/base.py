"""What every view of the API shares: the tenant and operation permissions, JSON only, cursor
pagination, the OpenAPI schema class and one error body.

Nothing depends on the host's REST_FRAMEWORK settings except authentication: the host's
DEFAULT_AUTHENTICATION_CLASSES authenticate (session, token, JWT: the host's choice).

Errors: a field error is DRF's field dict, `{"url": ["..."], "headers": ["..."]}` (errors about
several fields together under `non_field_errors`); any other refusal is `{"detail": "..."}`.
Django ValidationErrors (the model's full_clean) are mapped to the first form, so a bad URL reads
the same through the API as in admin.
"""

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler

from .pagination import AfterCursorPagination
from .permissions import HasOperationPermission, route_permissions
from .tenancy import HasTenant, request_tenant

# The OpenAPI vendor extension naming what a route needs when the host checks permissions.
REQUIRED_PERMISSION_KEY = "x-required-permission"


def api_exception_handler(exc, context):
    """DRF's handler, after turning a Django ValidationError into DRF's field dict (400)."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {
                (api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field): messages
                for field, messages in exc.message_dict.items()
            }
        else:
            detail = {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
        exc = exceptions.ValidationError(detail)
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError):
        response.data = field_errors(response.data)
    return response


def field_errors(detail) -> dict:
    """DRF's validation detail in the one documented form, `{field: [message, ...]}`: errors of a
    list item or dict key (DRF nests them, `{"event_types": {"4": [...]}}`) become messages
    naming the item ("item 4: ..."), a bare list of messages goes under non_field_errors."""
    if not isinstance(detail, dict):
        return {api_settings.NON_FIELD_ERRORS_KEY: list(_messages(detail))}
    return {field: list(_messages(value)) for field, value in detail.items()}


def _messages(value, where: str = ""):
    if isinstance(value, dict):
        for key, nested in value.items():
            yield from _messages(nested, f"{where}{f'item {key}' if isinstance(key, int) else key}: ")
    elif isinstance(value, list):
        for nested in value:
            yield from _messages(nested, where)
    else:
        yield f"{where}{value}"


def host_authenticators() -> list:
    """The host's DRF authentication, read at each request (not frozen when this module was
    imported, as APIView.authentication_classes is)."""
    return [auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES]


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, adding to each route that changes state the Django
    permission it needs when the host checks them (`x-required-permission`; the 403 answer
    names it too, see schema.document_errors)."""

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        needs = route_permissions(type(self.view), self.method)
        if operation and needs:
            operation[REQUIRED_PERMISSION_KEY] = needs
        return operation


def document(**kwargs):
    """drf-spectacular's `extend_schema` for a view method, built on ApiAutoSchema whatever the
    host's DEFAULT_SCHEMA_CLASS is (extend_schema would build on that)."""

    def decorator(method):
        method.kwargs = {"schema": ApiAutoSchema}
        return extend_schema(**kwargs)(method)

    return decorator


class Conflict(exceptions.APIException):
    """409: the request is valid but the object's state refuses it (the detail says why)."""

    status_code = 409
    default_detail = "The object's state does not allow this."
    default_code = "conflict"


class TenantView(GenericAPIView):
    """A view of the API: authenticated, tenant resolved, every queryset scoped to the tenant;
    a route that changes state also needs its Django permission when the host checks them."""

    permission_classes = [HasTenant, HasOperationPermission]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    pagination_class = AfterCursorPagination
    schema = ApiAutoSchema()
    filter_backends = []

    @property
    def tenant(self) -> str:
        return request_tenant(self.request)

    def get_exception_handler(self):
        return api_exception_handler

    def get_authenticators(self):
        return host_authenticators()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # PostgreSQL text cannot hold NUL: a filter naming one would fail in the database (500).
        for name, values in request.query_params.lists():
            if any("\x00" in value for value in values):
                raise exceptions.ValidationError({name: ["Null characters are not allowed."]})

    def cursor_queryset(self):
        """Where `?after=` ids are looked up: the tenant's rows, unfiltered."""
        return self.tenant_queryset()

    def cursor_pk(self, text: str):
        """The pk an id in the API names (None if it cannot name one)."""
        return int(text) if text.isdigit() and len(text) < 19 else None

    def cursor_value(self, obj) -> str:
        """The id of `obj` as the API writes it (a page's last object: the next cursor)."""
        return str(obj.pk)

    def tenant_queryset(self):
        raise NotImplementedError
