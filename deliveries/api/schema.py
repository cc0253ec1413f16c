"""schema/: the OpenAPI 3 document of this API only (not of the host's other DRF views)."""

from django.urls import include, path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView

from endpoints import __version__

from .base import REQUIRED_PERMISSION_KEY, host_authenticators
from .tenancy import HasTenant

ERROR_SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string", "description": "What was refused and why."}},
    },
    "FieldErrors": {
        "type": "object",
        "description": "Each field (or query parameter) in error, with its messages; non_field_errors for the rest.",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    },
}

# The values Django's <int:...> and <str:...> path converters match.
PATH_CONVERTERS = {"integer": {"minimum": 0}, "string": {"pattern": "^[^/]+$"}}


def _error(description: str, *schemas: str) -> dict:
    refs = [{"$ref": f"#/components/schemas/{schema}"} for schema in schemas or ["Error"]]
    return {
        "description": description,
        "content": {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}},
    }


def document_errors(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: the error answers every operation may give, in the
    API's two error bodies, so that clients (and schema-driven tests) know them."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(ERROR_SCHEMAS)
    for route, operations in result["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    # What the route's converter matches; anything else is the host's 404 page.
                    parameter["schema"].update(PATH_CONVERTERS[parameter["schema"]["type"]])
            responses.setdefault("401", _error("Not authenticated (as the host's authentication answers)."))
            refusal = "Not authenticated, no tenant for this request, or the API not enabled"
            if needs := operation.get(REQUIRED_PERMISSION_KEY):
                refusal += (
                    f"; or, where the host checks permissions, the account lacks the permission this needs: {needs}"
                )
            responses.setdefault("403", _error(refusal + "."))
            if "{" in route:
                responses.setdefault("404", _error("No such object for this tenant."))
            parameters = operation.get("parameters", [])
            if "requestBody" in operation or any(p["in"] in ("query", "header") for p in parameters):
                responses.setdefault(
                    "400",
                    _error("Invalid input: the fields in error, or a body that is not JSON.", "FieldErrors", "Error"),
                )
            if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in parameters):
                responses.setdefault("422", _error("The Idempotency-Key was used for another request."))
                responses.setdefault("409", _error("The object's state refuses it (the detail says why)."))
            if method == "delete" or route.endswith(("/retry/", "/cancel/", "/test-event/")):
                responses.setdefault("409", _error("The object's state refuses it (the detail says why)."))
    return result


SCHEMA_SETTINGS = {
    "TITLE": "Webhooks API",
    "DESCRIPTION": "Your webhook endpoints, the events sent to them and every delivery attempt.",
    "VERSION": __version__,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"WaitingReasonEnum": "deliveries.backlog.Waiting.choices"},
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "deliveries.api.schema.document_errors"],
}


class ApiSchemaView(SpectacularAPIView):
    """The document lists the API's routes under the prefix the host mounted them at. JSON unless
    the client asks for YAML (Accept: application/vnd.oai.openapi)."""

    permission_classes = [HasTenant]
    custom_settings = SCHEMA_SETTINGS
    renderer_classes = [OpenApiJsonRenderer2, OpenApiJsonRenderer, OpenApiYamlRenderer]

    def get_authenticators(self):
        return host_authenticators()

    def get(self, request, *args, **kwargs):
        from .urls import api_patterns  # urls imports this module

        # The routes as mounted: the request's path without "schema/" is the mount prefix.
        prefix = request.path_info[1 : -len("schema/")]
        self.patterns = [path(prefix, include(api_patterns))]
        return super().get(request, *args, **kwargs)
