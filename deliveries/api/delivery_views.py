"""deliveries/, deliveries/{id}/, deliveries/{id}/retry/: a tenant's deliveries and attempts.

A delivery belongs to the tenant of its endpoint. Retry is the admin's (deliveries/operations.py),
with the same rules: a succeeded delivery, one of a disabled endpoint or one being sent right
now is left alone (409, saying why).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from ..models import AttemptTrigger, Delivery, DeliveryStatus
from ..operations import retry_deliveries
from .audit import record_change
from .base import Conflict, TenantView, document
from .event_views import event_pk
from .idempotency import IDEMPOTENCY_PARAMETER, idempotent
from .serializers import DeliveryDetailSerializer, DeliverySerializer, RetrySerializer

# The columns a list row shows (the payload and the rest of the event are not read).
_DELIVERY_COLUMNS = (
    "event_id",
    "endpoint_id",
    "status",
    "attempt_count",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "created_at",
    "updated_at",
)


class DeliveryList(TenantView):
    """The tenant's deliveries (one per event and endpoint), oldest first."""

    serializer_class = DeliverySerializer

    def tenant_queryset(self):
        return Delivery.objects.filter(endpoint__tenant=self.tenant)

    @document(
        summary="List deliveries, oldest first",
        parameters=[
            OpenApiParameter("endpoint", OpenApiTypes.INT, description="Only deliveries to this endpoint."),
            OpenApiParameter("event", OpenApiTypes.STR, description="Only deliveries of this event (evt_...)."),
            OpenApiParameter("status", OpenApiTypes.STR, enum=DeliveryStatus.values, description="Only this status."),
        ],
        responses=DeliverySerializer(many=True),
    )
    def get(self, request):
        queryset = self.tenant_queryset().select_related("event").only("id", "event__type", *_DELIVERY_COLUMNS)
        params = request.query_params
        if (endpoint := params.get("endpoint")) is not None:
            if not endpoint.isdigit() or len(endpoint) > 18:
                raise ValidationError({"endpoint": ["Use an endpoint id (a whole number)."]})
            queryset = queryset.filter(endpoint_id=int(endpoint))
        if (event := params.get("event")) is not None:
            if (pk := event_pk(event)) is None:
                raise ValidationError({"event": ["Use an event id (evt_...)."]})
            queryset = queryset.filter(event_id=pk)
        if (wanted := params.get("status")) is not None:
            if wanted not in DeliveryStatus.values:
                raise ValidationError({"status": [f"Use one of: {', '.join(DeliveryStatus.values)}."]})
            queryset = queryset.filter(status=wanted)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)


class DeliveryDetail(TenantView):
    """One delivery with every attempt: request and response headers, status, body, error."""

    serializer_class = DeliveryDetailSerializer

    def get_queryset(self):
        return (
            Delivery.objects.filter(endpoint__tenant=self.tenant).select_related("event").prefetch_related("attempts")
        )

    @document(summary="Read a delivery with every attempt (credentials and signatures redacted)")
    def get(self, request, pk):
        return Response(DeliveryDetailSerializer(self.get_object()).data)


class DeliveryRetry(TenantView):
    """Send a delivery again now, as the admin's Retry does."""

    serializer_class = RetrySerializer

    def get_queryset(self):
        return (
            Delivery.objects.filter(endpoint__tenant=self.tenant)
            .select_related("endpoint")
            .only("pk", "attempt_count", "endpoint__verification_status")
        )

    @document(
        summary="Retry a delivery now (a manual attempt)",
        request=None,
        responses={202: RetrySerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @idempotent
    def post(self, request, pk):
        delivery = self.get_object()
        report = retry_deliveries([delivery.pk], AttemptTrigger.MANUAL)
        if not report.queued:
            reason = ", ".join(report.skipped) or "nothing to do"
            raise Conflict(f"Delivery {delivery.pk} was not retried: {reason}.")
        record_change(request, Delivery, [delivery.pk], "Retried now (manual attempt).")
        attempt = f"Delivery {delivery.pk} queued: attempt {delivery.attempt_count + 1}"
        if delivery.endpoint.awaits_verification:
            detail = f"{attempt} waits until the endpoint answers the verification handshake."
        elif report.paused:
            detail = f"{attempt} waits for the endpoint's circuit breaker to close."
        else:
            detail = f"{attempt} goes out within seconds."
        return Response(RetrySerializer({"queued": True, "detail": detail}).data, status=status.HTTP_202_ACCEPTED)
