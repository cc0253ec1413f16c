"""What an operator can do to deliveries: send a test event, retry now, replay failures.

Shared by the admin and the management commands. Writes happen in short transactions of at
most RETRY_BATCH_SIZE rows, and sends are enqueued only after each commits, with the trigger
(manual or replay) that the attempt records.

A retried delivery keeps its webhook id and its attempt count: a manual retry is one more
attempt of the same delivery. If that attempt fails with a retryable error, the delivery
continues its automatic schedule where it was (attempt n + 1 waits the n-th delay); once the
schedule is spent, as it is for a delivery that gave up after all its attempts, a failed
manual retry fails again at once. So a retry costs the receiver at most what the original
schedule would have, and an operator can retry a dead letter as often as needed.
"""

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import islice

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from endpoints.models import Endpoint

from . import ordering, scheduling
from .models import AttemptTrigger, Delivery, DeliveryStatus, Event, ParkedReason
from .publishing import serialize_payload

TEST_EVENT_TYPE = "webhook.test"
# Rows locked and updated per transaction: 1,000 keeps each transaction to a few ms and the
# id list of one UPDATE small, while 100,000 retries still take only 100 round trips.
RETRY_BATCH_SIZE = 1000

SKIP_SUCCEEDED = "already succeeded"
SKIP_DISABLED = "endpoint disabled (enable it first)"
SKIP_IN_FLIGHT = "being sent right now"
SKIP_MISSING = "no longer exists"
SKIP_ORDERED = "waiting for an earlier delivery of its ordering key (retry or cancel that one)"
SKIP_FINISHED = "already succeeded or cancelled"


class OperationRefused(Exception):
    """The operation cannot be done as asked; nothing was written. The message says why."""


def _enqueue_after_commit(delivery_ids: list[int], trigger: str) -> None:
    from .tasks import enqueue_sends  # tasks imports the Celery app; keep this module light

    transaction.on_commit(partial(enqueue_sends, delivery_ids, trigger=trigger))


def send_test_event(endpoint: Endpoint) -> Delivery:
    """Send a `webhook.test` event to this one endpoint, whatever types it subscribes to.

    The event is created already fanned out, with its single delivery, so no other endpoint
    of the tenant receives it; the send is enqueued after commit and retried like any other.
    Raises OperationRefused for a disabled endpoint.
    """
    if not endpoint.is_active:
        raise OperationRefused(f"endpoint {endpoint.pk} is disabled ({endpoint.disabled_reason or 'no reason given'})")
    now = timezone.now()
    with transaction.atomic():
        payload = {"test": True, "endpoint_id": endpoint.pk, "message": "A test event sent by an operator."}
        event = Event.objects.create(
            type=TEST_EVENT_TYPE,
            tenant=endpoint.tenant,
            payload=payload,
            payload_json=serialize_payload(payload),
            fanned_out_at=now,
        )
        delivery = Delivery.objects.create(event=event, endpoint=endpoint, **scheduling.initial_state(now, None))
        _enqueue_after_commit([delivery.pk], AttemptTrigger.AUTOMATIC)
    return delivery


@dataclass
class RetryReport:
    """What a retry or replay did: the deliveries queued and, by reason, those it left alone."""

    queued: list[int] = field(default_factory=list)
    paused: int = 0  # of the queued, those whose endpoint's circuit breaker is open: they wait for it
    skipped: Counter = field(default_factory=Counter)
    action: str = "queued"  # what was done to the deliveries of `queued`: "queued", "cancelled"

    def add(self, other: "RetryReport") -> None:
        self.queued.extend(other.queued)
        self.paused += other.paused
        self.skipped.update(other.skipped)

    def summary(self) -> str:
        """One sentence for a person: "12 deliveries queued; 2 skipped: already succeeded"."""
        count = len(self.queued)
        text = f"{count} {'delivery' if count == 1 else 'deliveries'} {self.action}"
        if self.paused:
            text += f" ({self.paused} will wait for their endpoint's circuit breaker to close)"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            text += f"; skipped {reasons}"
        return text

    def as_dict(self) -> dict:
        return {
            "queued": len(self.queued),
            "queued_ids": self.queued,
            "waiting_for_breaker": self.paused,
            "skipped": dict(self.skipped),
        }


def _batches(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    iterator = iter(ids)
    while batch := list(islice(iterator, size)):
        yield batch


def retry_deliveries(
    delivery_ids: Iterable[int],
    trigger: str = AttemptTrigger.MANUAL,
    *,
    progress: Callable[[int], None] | None = None,
) -> RetryReport:
    """Put failed or pending deliveries back to pending, due now, and enqueue them after commit.

    The attempt they make records `trigger` (manual retry, or replay). Left alone, and counted
    by reason in the report: succeeded deliveries (they were received), deliveries of disabled
    endpoints (enable the endpoint: its kept deliveries resume), and deliveries a worker is
    sending right now (their lease is live). `progress(n)` is called after each batch with the
    number of ids handled so far.
    """
    report = RetryReport()
    done = 0
    for batch in _batches(delivery_ids, RETRY_BATCH_SIZE):
        report.add(_retry_batch(batch, trigger))
        done += len(batch)
        if progress:
            progress(done)
    return report


def _retry_batch(ids: list[int], trigger: str) -> RetryReport:
    report = RetryReport()
    now = timezone.now()
    with transaction.atomic():
        rows = (
            Delivery.objects.select_for_update(of=("self",))
            .filter(pk__in=ids)
            .order_by("pk")
            .values_list(
                "pk", "status", "locked_until", "parked_reason", "endpoint__is_active", "endpoint__paused_until"
            )
        )
        eligible = []
        for pk, status, locked_until, reason, endpoint_active, paused_until in rows:
            if status == DeliveryStatus.SUCCEEDED:
                report.skipped[SKIP_SUCCEEDED] += 1
            elif not endpoint_active:
                report.skipped[SKIP_DISABLED] += 1
            elif status == DeliveryStatus.PENDING and locked_until is not None and locked_until > now:
                report.skipped[SKIP_IN_FLIGHT] += 1
            elif status == DeliveryStatus.PENDING and reason == ParkedReason.ORDERING:
                report.skipped[SKIP_ORDERED] += 1
            else:
                eligible.append(pk)
                report.paused += paused_until is not None and paused_until > now
        report.skipped[SKIP_MISSING] += len(set(ids)) - sum(report.skipped.values()) - len(eligible)
        report.skipped = +report.skipped  # drop zero counts
        if eligible:
            scheduling.retry_now(eligible, now)
            _enqueue_after_commit(eligible, trigger)
        report.queued = eligible
    return report


def cancel_deliveries(delivery_ids: Iterable[int]) -> RetryReport:
    """Cancel pending or failed deliveries: they finish unsent (or unsent again), and the next
    delivery of their ordering key, if any, goes out. Left alone, by reason: succeeded or already
    cancelled deliveries, and those being sent right now. The report's `queued` lists the
    cancelled ones."""
    report = RetryReport(action="cancelled")
    for batch in _batches(delivery_ids, RETRY_BATCH_SIZE):
        report.add(_cancel_batch(batch))
    return report


def _cancel_batch(ids: list[int]) -> RetryReport:
    report = RetryReport()
    now = timezone.now()
    with transaction.atomic():
        # The chains of their ordering keys first, as the send path takes them (it holds a chain
        # when it releases the next delivery, which may be one of these): no deadlock.
        ordering.lock_chains(Delivery.objects.filter(pk__in=ids, ordering_key__isnull=False))
        rows = list(
            Delivery.objects.select_for_update(of=("self",))
            .filter(pk__in=ids)
            .order_by("pk")
            # The instances feed ordering.finished_chains: endpoint_id and ordering_key.
            .only("pk", "status", "locked_until", "endpoint_id", "ordering_key")
        )
        eligible = []
        for delivery in rows:
            if delivery.status not in (DeliveryStatus.PENDING, DeliveryStatus.FAILED):
                report.skipped[SKIP_FINISHED] += 1
            elif delivery.locked_until is not None and delivery.locked_until > now:
                report.skipped[SKIP_IN_FLIGHT] += 1
            else:
                eligible.append(delivery)
        report.skipped[SKIP_MISSING] += len(set(ids)) - len(rows)
        report.skipped = +report.skipped
        if eligible:
            scheduling.cancel([delivery.pk for delivery in eligible], now)
            ordering.advance(ordering.finished_chains((delivery, DeliveryStatus.CANCELLED) for delivery in eligible))
        report.queued = [delivery.pk for delivery in eligible]
    return report


def failed_deliveries(endpoint_ids: Iterable[int] | None = None, since: datetime | None = None) -> QuerySet:
    """Failed deliveries (dead letters), of some endpoints only, that failed at or after `since`.

    "Failed at" is the delivery's last update: the attempt that made it fail.
    """
    queryset = Delivery.objects.filter(status=DeliveryStatus.FAILED)
    if endpoint_ids is not None:
        queryset = queryset.filter(endpoint_id__in=list(endpoint_ids))
    if since is not None:
        queryset = queryset.filter(updated_at__gte=since)
    return queryset


def replay_failed_since(
    endpoint_ids: Iterable[int], since: datetime, *, progress: Callable[[int], None] | None = None
) -> RetryReport:
    """Send again every delivery of these endpoints that failed at or after `since` (trigger: replay)."""
    return retry_deliveries(
        ids_by_keyset(failed_deliveries(endpoint_ids, since)), AttemptTrigger.REPLAY, progress=progress
    )


def ids_by_keyset(queryset: QuerySet, size: int = RETRY_BATCH_SIZE) -> Iterator[int]:
    """The ids of a (large) queryset in ascending order, read `size` at a time by keyset, so
    rows changed while the caller works through them are neither skipped nor read twice."""
    last = 0
    while ids := list(queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:size]):
        yield from ids
        last = ids[-1]
