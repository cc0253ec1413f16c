"""deliveries/, deliveries/{id}/, deliveries/{id}/retry/, deliveries/{id}/cancel/: a tenant's
deliveries and attempts, and why pending ones wait.

A delivery belongs to the tenant of its endpoint. Retry and Cancel are the admin's
(deliveries/operations.py), with the same rules: retry leaves alone a succeeded delivery, one of
a disabled endpoint, one being sent right now or one waiting behind its ordering key; cancel
leaves alone a succeeded or cancelled delivery and one being sent right now (409, saying why).
"""

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from ..backlog import Waiting, waiting_condition
from ..models import AttemptTrigger, Delivery, DeliveryStatus
from ..operations import cancel_deliveries, retry_deliveries
from .audit import record_change
from .base import Conflict, TenantView, document
from .event_views import event_pk
from .idempotency import IDEMPOTENCY_PARAMETER, idempotent
from .serializers import CancelSerializer, DeliveryDetailSerializer, DeliverySerializer, RetrySerializer
from .waiting import waiting_context

# The columns a list row shows (the payload and the rest of the event are not read), with the
# scheduling fields `waiting` is derived from and the endpoint's breaker.
_DELIVERY_COLUMNS = (
    "event_id",
    "endpoint_id",
    "status",
    "attempt_count",
    "next_attempt_at",
    "locked_until",
    "parked_reason",
    "last_status_code",
    "last_error",
    "ordering_key",
    "sequence",
    "created_at",
    "updated_at",
    "event__type",
    "endpoint__paused_until",
)
# What the History of a cancelled delivery says (the words admin's Cancel writes).
CANCELLED_MESSAGE = "Cancelled (not to be sent)."


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
            OpenApiParameter(
                "waiting",
                OpenApiTypes.STR,
                enum=Waiting.values,
                description="Only pending deliveries waiting for this reason (see waiting.reason).",
            ),
        ],
        responses=DeliverySerializer(many=True),
    )
    def get(self, request):
        now = timezone.now()
        queryset = self.tenant_queryset().select_related("event", "endpoint").only("id", *_DELIVERY_COLUMNS)
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
        if (reason := params.get("waiting")) is not None:
            if reason not in Waiting.values:
                raise ValidationError({"waiting": [f"Use one of: {', '.join(Waiting.values)}."]})
            queryset = queryset.filter(waiting_condition(reason, now))
        page = self.paginate_queryset(queryset)
        context = waiting_context(page, now)
        return self.get_paginated_response(DeliverySerializer(page, many=True, context=context).data)


class DeliveryDetail(TenantView):
    """One delivery with every attempt: request and response headers, status, body, error."""

    serializer_class = DeliveryDetailSerializer

    def get_queryset(self):
        return (
            Delivery.objects.filter(endpoint__tenant=self.tenant)
            .select_related("event", "endpoint")
            .prefetch_related("attempts")
        )

    @document(summary="Read a delivery with every attempt (credentials and signatures redacted)")
    def get(self, request, pk):
        delivery = self.get_object()
        context = waiting_context([delivery], timezone.now())
        return Response(DeliveryDetailSerializer(delivery, context=context).data)


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


class DeliveryCancel(TenantView):
    """Cancel a pending or failed delivery, as the admin's Cancel does: it is not sent, and the
    next delivery of its ordering key, if any, goes out."""

    serializer_class = CancelSerializer

    def get_queryset(self):
        return Delivery.objects.filter(endpoint__tenant=self.tenant).only("pk", "ordering_key")

    @document(
        summary="Cancel a pending or failed delivery (it is not sent)",
        request=None,
        responses={200: CancelSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @idempotent
    def post(self, request, pk):
        delivery = self.get_object()
        report = cancel_deliveries([delivery.pk])
        if not report.queued:
            reason = ", ".join(report.skipped) or "nothing to do"
            raise Conflict(f"Delivery {delivery.pk} was not cancelled: {reason}.")
        record_change(request, Delivery, [delivery.pk], CANCELLED_MESSAGE)
        detail = f"Delivery {delivery.pk} cancelled: it will not be sent"
        if delivery.ordering_key is not None:
            detail += f", and the next delivery of its ordering key {delivery.ordering_key!r}, if any, goes out"
        detail += f" (POST deliveries/{delivery.pk}/retry/ sends it after all)."
        return Response(CancelSerializer({"cancelled": True, "detail": detail}).data)
