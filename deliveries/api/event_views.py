"""event-types/, events/, events/{id}/: the catalog and a tenant's events.

`events/?after=evt_...` is how a receiver reconciles: everything the tenant was sent after the
last event it processed, oldest first, so a gap (a webhook that never arrived) shows.
"""

import datetime
import uuid

from django.db.models import Prefetch
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from .. import catalog
from ..models import Delivery, Event
from .base import TenantView, document
from .serializers import EventDetailSerializer, EventSerializer, EventTypeSerializer

EVENT_ID_PREFIX = "evt_"


def event_pk(text: str) -> uuid.UUID | None:
    """The primary key an `evt_<hex>` id names, or None when it is not one."""
    if not text.startswith(EVENT_ID_PREFIX):
        return None
    try:
        return uuid.UUID(hex=text[len(EVENT_ID_PREFIX) :])
    except ValueError:
        return None


def query_time(request, name: str):
    """An ISO 8601 time with its offset from the query string, or None when absent."""
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        value = parse_datetime(text.replace(" ", "+"))  # an unescaped + in a query string reads as a space
        # In UTC: PostgreSQL refuses offsets beyond 15:59 that Python accepts (up to 23:59).
        value = value.astimezone(datetime.UTC) if value and value.tzinfo else None
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+01:00 is before year 1 in UTC
        value = None
    if value is None:
        raise ValidationError({name: ["Use an ISO 8601 time with its offset, e.g. 2026-01-31T12:00:00Z."]})
    return value


class EventTypeList(TenantView):
    """The event types the host publishes, with descriptions and the JSON Schemas of their
    payloads (the host's WEBHOOKS_EVENT_TYPES, the same for every tenant). Paged like every list,
    `after` being a type name."""

    serializer_class = EventTypeSerializer

    @document(
        summary="List the event types (empty when the host accepts any type)", responses=EventTypeSerializer(many=True)
    )
    def get(self, request):
        entries = [
            {"type": name, "description": (entry or {}).get("description", ""), "schema": (entry or {}).get("schema")}
            for name, entry in sorted(catalog.event_types().items())
        ]
        paginator = self.paginator
        start = 0
        if after := request.query_params.get(paginator.cursor_query_param):
            names = [entry["type"] for entry in entries]
            if after not in names:
                raise ValidationError({paginator.cursor_query_param: [f"No event type {after!r} to list after."]})
            start = names.index(after) + 1
        limit = paginator.page_limit(request)
        page = entries[start : start + limit]
        paginator.remember(request, self, page, has_more=len(entries) > start + limit)
        return paginator.get_paginated_response(EventTypeSerializer(page, many=True).data)

    def cursor_value(self, obj) -> str:
        return obj["type"]


class EventList(TenantView):
    """The tenant's events, oldest first; `after=evt_...` lists those created after that one."""

    serializer_class = EventSerializer

    def tenant_queryset(self):
        return Event.objects.filter(tenant=self.tenant)

    def cursor_pk(self, text: str):
        return event_pk(text)

    def cursor_value(self, obj) -> str:
        return obj.webhook_id

    @document(
        summary="List events, oldest first",
        parameters=[
            OpenApiParameter("type", OpenApiTypes.STR, description="Only events of this type."),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Only events created at or after."),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Only events created before."),
        ],
        responses=EventSerializer(many=True),
    )
    def get(self, request):
        queryset = self.tenant_queryset().only("id", "type", "created_at", "ordering_key", "payload", "payload_json")
        if event_type := request.query_params.get("type"):
            queryset = queryset.filter(type=event_type)
        if since := query_time(request, "since"):
            queryset = queryset.filter(created_at__gte=since)
        if until := query_time(request, "until"):
            queryset = queryset.filter(created_at__lt=until)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(EventSerializer(page, many=True).data)


class EventDetail(TenantView):
    """One event, its payload and its delivery to each endpoint."""

    serializer_class = EventDetailSerializer

    @document(summary="Read an event with its delivery to each endpoint")
    def get(self, request, event_id: str):
        pk = event_pk(event_id)
        deliveries = Prefetch("deliveries", queryset=Delivery.objects.order_by("endpoint_id"))
        event = Event.objects.filter(tenant=self.tenant, pk=pk).prefetch_related(deliveries).first() if pk else None
        if event is None:
            raise NotFound(f"No event {event_id}.")
        return Response(EventDetailSerializer(event).data)
