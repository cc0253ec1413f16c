"""The circuit breaker: a failing endpoint is paused instead of hammered.

After WEBHOOKS_BREAKER_THRESHOLD consecutive failed attempts the endpoint's `paused_until` is
set a cool-down (WEBHOOKS_BREAKER_COOLDOWN) ahead. While it is paused, its deliveries are
parked (pending, `next_attempt_at` null: no attempt is spent, nothing fails). When the
cool-down is over the sweep releases one parked delivery; the first send that finds the pause
over takes the probe by pushing the pause forward, so only one request goes out. A success
closes the breaker and releases every parked delivery; a failure opens it again.
"""

from datetime import datetime, timedelta

from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from endpoints.app_settings import webhook_settings
from endpoints.models import Endpoint, VerificationStatus

from .models import Delivery, DeliveryStatus
from .scheduling import ENDPOINT_REASONS, unpark


def cooldown() -> timedelta:
    return timedelta(seconds=webhook_settings.BREAKER_COOLDOWN)


def may_send(endpoint: Endpoint, now: datetime) -> bool:
    """Whether a send to `endpoint` may go out now; taking the probe if the cool-down is over."""
    paused_until = endpoint.paused_until
    if paused_until is None:
        return True
    if paused_until > now:
        return False
    # Of all senders that find the pause over, the one whose UPDATE matches sends the probe.
    took = Endpoint.objects.filter(pk=endpoint.pk, paused_until=paused_until).update(paused_until=now + cooldown())
    return bool(took)


def record_failure(endpoint: Endpoint, now: datetime, count: int = 1) -> None:
    """Count `count` failed attempts; those that reach the threshold open the breaker."""
    threshold = webhook_settings.BREAKER_THRESHOLD
    Endpoint.objects.filter(pk=endpoint.pk).update(
        consecutive_failures=F("consecutive_failures") + count,
        failing_since=Coalesce(F("failing_since"), Value(now)),
        paused_until=Case(
            When(consecutive_failures__gte=threshold - count, then=Value(now + cooldown())),
            default=F("paused_until"),
        ),
    )


def record_success(endpoint: Endpoint, now: datetime) -> None:
    """Close the breaker and release parked deliveries, if anything was amiss when the send began."""
    if not (endpoint.consecutive_failures or endpoint.failing_since or endpoint.paused_until):
        return  # the steady state writes nothing
    Endpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0, failing_since=None, paused_until=None)
    release_parked(endpoint.pk, now)


def release_parked(endpoint_id: int, now: datetime, limit: int | None = None) -> int:
    """Make parked deliveries of an active endpoint due now (all, or the `limit` oldest)."""
    return unpark(Delivery.objects.filter(endpoint_id=endpoint_id), now, limit=limit)


def release_after_pauses(now: datetime | None = None) -> int:
    """For the sweep: release one probe for each endpoint whose cool-down is over, and every
    parked delivery of active endpoints whose breaker is closed (a send that parked itself
    while the breaker was closing would otherwise wait for the next failure)."""
    now = now or timezone.now()
    released = 0
    # Deliveries of an unverified endpoint wait for its handshake, not for the breaker.
    active = Endpoint.objects.filter(is_active=True).exclude(verification_status=VerificationStatus.UNVERIFIED)
    for endpoint_id in active.filter(paused_until__lte=now).values_list("pk", flat=True):
        released += release_parked(endpoint_id, now, limit=1)
    closed_with_parked = (
        active.filter(paused_until__isnull=True)
        .filter(
            deliveries__status=DeliveryStatus.PENDING,
            deliveries__next_attempt_at__isnull=True,
            deliveries__parked_reason__in=ENDPOINT_REASONS,
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    for endpoint_id in closed_with_parked:
        released += release_parked(endpoint_id, now)
    return released
