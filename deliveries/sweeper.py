"""The sweep: find work the broker lost or never had, and hand it back to the workers.

- deliveries due (`next_attempt_at` passed) with no live lease and no message expected
  (`queued_until` passed): long retry waits live only here, never in the broker;
- events committed but never fanned out (the broker was down at commit).

Rows are taken with SELECT ... FOR UPDATE SKIP LOCKED and marked `queued_until` in the same
transaction, so overlapping sweeps never pick the same delivery; a delivery enqueued twice is
still sent once, because sending starts by claiming it.
"""

from datetime import timedelta
from typing import NamedTuple

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from endpoints.app_settings import webhook_settings

from .models import Delivery, DeliveryStatus, Event
from .scheduling import mark_queued


def take_due_deliveries(limit: int) -> list[int]:
    """Mark up to `limit` due, unclaimed, unqueued deliveries as queued and return their ids."""
    return [due.id for due in take_due(limit)]


class Due(NamedTuple):
    """A delivery to enqueue: where it goes and in which lane (see tasks.enqueue_due)."""

    id: int
    endpoint_id: int
    retry_lane: bool  # a retry, or its endpoint is failing


def take_due(limit: int, endpoint_id: int | None = None) -> list[Due]:
    """Mark up to `limit` due, unclaimed, unqueued deliveries (of one endpoint, if given) as
    queued and return them."""
    now = timezone.now()
    pending = Delivery.objects.filter(status=DeliveryStatus.PENDING)
    if endpoint_id is not None:
        pending = pending.filter(endpoint_id=endpoint_id)
    with transaction.atomic():
        rows = list(
            pending.select_for_update(skip_locked=True, of=("self",))
            .filter(next_attempt_at__lte=now)
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
            .filter(Q(queued_until__isnull=True) | Q(queued_until__lt=now))
            .order_by("next_attempt_at")
            .values_list("id", "endpoint_id", "attempt_count", "endpoint__consecutive_failures")[:limit]
        )
        ids = [row[0] for row in rows]
        if ids:
            mark_queued(ids, now)
    return [Due(pk, endpoint_id, bool(attempts or failures)) for pk, endpoint_id, attempts, failures in rows]


def events_never_fanned_out(limit: int) -> list[str]:
    """Events committed at least a requeue interval ago and still not fanned out."""
    cutoff = timezone.now() - timedelta(seconds=webhook_settings.REQUEUE_AFTER)
    return [
        str(pk)
        for pk in Event.objects.filter(fanned_out_at__isnull=True, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    ]
