"""The customers' API routes. Mount them in the host: `path("api/webhooks/", include("deliveries.api.urls"))`."""

from django.urls import path

from .delivery_views import DeliveryCancel, DeliveryDetail, DeliveryList, DeliveryRetry
from .endpoint_views import EndpointDetail, EndpointList, EndpointRotateSecret
from .event_views import EventDetail, EventList, EventTypeList
from .operation_views import EndpointHealth, EndpointReplay, EndpointTestEvent
from .schema import ApiSchemaView

app_name = "webhooks_api"

api_patterns = [
    path("endpoints/", EndpointList.as_view(), name="endpoint-list"),
    path("endpoints/<int:pk>/", EndpointDetail.as_view(), name="endpoint-detail"),
    path("endpoints/<int:pk>/rotate-secret/", EndpointRotateSecret.as_view(), name="endpoint-rotate-secret"),
    path("endpoints/<int:pk>/test-event/", EndpointTestEvent.as_view(), name="endpoint-test-event"),
    path("endpoints/<int:pk>/replay/", EndpointReplay.as_view(), name="endpoint-replay"),
    path("endpoints/<int:pk>/health/", EndpointHealth.as_view(), name="endpoint-health"),
    path("event-types/", EventTypeList.as_view(), name="event-type-list"),
    path("events/", EventList.as_view(), name="event-list"),
    path("events/<str:event_id>/", EventDetail.as_view(), name="event-detail"),
    path("deliveries/", DeliveryList.as_view(), name="delivery-list"),
    path("deliveries/<int:pk>/", DeliveryDetail.as_view(), name="delivery-detail"),
    path("deliveries/<int:pk>/retry/", DeliveryRetry.as_view(), name="delivery-retry"),
    path("deliveries/<int:pk>/cancel/", DeliveryCancel.as_view(), name="delivery-cancel"),
]

urlpatterns = [*api_patterns, path("schema/", ApiSchemaView.as_view(), name="schema")]
