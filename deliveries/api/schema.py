"""schema/: the OpenAPI 3 document of this API only (not of the host's other DRF views)."""

from django.urls import include, path
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView

from endpoints import __version__

from .base import host_authenticators
from .tenancy import HasTenant

SCHEMA_SETTINGS = {
    "TITLE": "Webhooks API",
    "DESCRIPTION": "Your webhook endpoints, the events sent to them and every delivery attempt.",
    "VERSION": __version__,
    "COMPONENT_SPLIT_REQUEST": True,
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
