"""endpoints/{id}/test-event/, endpoints/{id}/replay/, endpoints/{id}/health/: what an operator
does to an endpoint in admin, for the tenant's own endpoints.

The same functions as admin's actions (deliveries/operations.py, deliveries/endpoint_stats.py,
the health windows of deliveries/health.py), the same refusals, and the same History record.
"""

from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.response import Response

from endpoints.models import Endpoint

from ..endpoint_stats import EndpointState, attempt_rates, endpoint_state, with_delivery_figures
from ..health import health_windows
from ..operations import OperationRefused, replay_failed_since, send_test_event
from .audit import record_change
from .base import Conflict, TenantView, document
from .idempotency import IDEMPOTENCY_PARAMETER, idempotent


class TestEventSerializer(serializers.Serializer):
    delivery_id = serializers.IntegerField(help_text="The delivery of the test event (see deliveries/{id}/).")
    event_id = serializers.CharField(help_text="The test event's id, as the receiver gets it in webhook-id.")
    detail = serializers.CharField()


class ReplaySerializer(serializers.Serializer):
    since = serializers.DateTimeField(
        help_text="Deliveries of this endpoint whose last attempt failed at or after this time are sent again."
    )

    def validate_since(self, since):
        if since > timezone.now():
            raise serializers.ValidationError("That time is in the future: nothing can have failed since then.")
        return since


class ReplayReportSerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="How many failed deliveries are sent again (trigger: replay).")
    queued_ids = serializers.ListField(child=serializers.IntegerField(), help_text="Their delivery ids.")
    waiting_for_breaker = serializers.IntegerField(
        help_text="Of the queued, those waiting for the endpoint's circuit breaker to close."
    )
    skipped = serializers.DictField(child=serializers.IntegerField(), help_text="Left alone, counted by reason.")
    detail = serializers.CharField()


class HealthWindowSerializer(serializers.Serializer):
    seconds = serializers.IntegerField(help_text="The window: the last this many seconds.")
    attempts = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True, help_text="succeeded / attempts; null without attempts.")


class HealthSerializer(serializers.Serializer):
    state = serializers.ChoiceField(
        choices=[EndpointState.ACTIVE, EndpointState.PAUSED, EndpointState.DISABLED, EndpointState.UNVERIFIED],
        help_text="paused: its circuit breaker is open; unverified: waiting for the verification handshake.",
    )
    windows = HealthWindowSerializer(many=True, help_text="Success rate per health window (WEBHOOKS_HEALTH_WINDOWS).")
    last_success_at = serializers.DateTimeField(allow_null=True)
    pending = serializers.IntegerField(help_text="Deliveries still to be sent (the backlog).")
    failed = serializers.IntegerField(help_text="Deliveries that gave up (may be retried or replayed).")


class EndpointOperation(TenantView):
    """An operation on one of the tenant's endpoints (another tenant's id: 404)."""

    def get_queryset(self):
        return Endpoint.objects.filter(tenant=self.tenant)


class EndpointTestEvent(EndpointOperation):
    """Send a `webhook.test` event to this endpoint only, whatever types it subscribes to."""

    serializer_class = TestEventSerializer

    @document(
        summary="Send a test event (webhook.test) to this endpoint",
        request=None,
        responses={202: TestEventSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @idempotent
    def post(self, request, pk):
        endpoint = self.get_object()
        try:
            delivery = send_test_event(endpoint)
        except OperationRefused as refusal:
            raise Conflict(f"Not sent: {refusal}.") from None
        record_change(request, Endpoint, [endpoint.pk], f"Sent a test event (delivery {delivery.pk}).")
        detail = f"Test event queued: delivery {delivery.pk}."
        if endpoint_state(endpoint) == EndpointState.PAUSED:
            detail += " The endpoint is paused by its circuit breaker: the test waits for it."
        elif endpoint_state(endpoint) == EndpointState.UNVERIFIED:
            detail += " The endpoint is not verified yet: the test waits for the handshake."
        data = {"delivery_id": delivery.pk, "event_id": delivery.event.webhook_id, "detail": detail}
        return Response(TestEventSerializer(data).data, status=status.HTTP_202_ACCEPTED)


class EndpointReplay(EndpointOperation):
    """Send again every delivery of this endpoint that failed since a time (a replay attempt each,
    same webhook id)."""

    serializer_class = ReplaySerializer

    @document(
        summary="Replay the deliveries of this endpoint that failed since a time",
        request=ReplaySerializer,
        responses={202: ReplayReportSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @idempotent
    def post(self, request, pk):
        endpoint = self.get_object()
        serializer = ReplaySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        since = serializer.validated_data["since"]
        report = replay_failed_since([endpoint.pk], since)
        summary = f"Replay of failures since {since.isoformat()}: {report.summary()}."
        record_change(request, Endpoint, [endpoint.pk], summary)
        data = {**report.as_dict(), "detail": summary}
        return Response(ReplayReportSerializer(data).data, status=status.HTTP_202_ACCEPTED)


class EndpointHealth(EndpointOperation):
    """The figures admin shows for an endpoint: state, success rate per health window, last
    success, backlog."""

    serializer_class = HealthSerializer

    def get_queryset(self):
        return with_delivery_figures(super().get_queryset())

    @document(summary="Health figures of this endpoint", responses=HealthSerializer)
    def get(self, request, pk):
        endpoint = self.get_object()
        now = timezone.now()
        windows = []
        for seconds in health_windows():
            rate = attempt_rates([endpoint.pk], window=timedelta(seconds=seconds), now=now).get(endpoint.pk)
            attempts, succeeded = (rate.attempts, rate.succeeded) if rate else (0, 0)
            windows.append(
                {
                    "seconds": seconds,
                    "attempts": attempts,
                    "succeeded": succeeded,
                    "success_rate": succeeded / attempts if attempts else None,
                }
            )
        data = {
            "state": endpoint_state(endpoint, now),
            "windows": windows,
            "last_success_at": endpoint.last_success_at,
            "pending": endpoint.pending_count,
            "failed": endpoint.failed_count,
        }
        return Response(HealthSerializer(data).data)
