"""Retention: purge old deliveries, their attempts, events, expired secrets and the API's
Idempotency-Key answers older than 24 h, in batches.

Runs daily from beat (`deliveries.retention`, maintenance queue) and on demand with
`manage.py webhooks_retention [--report-only] [--json]`.

Every batch selects at most WEBHOOKS_RETENTION_BATCH_SIZE ids, locks them (skipping rows
another transaction holds) and deletes by id in its own short transaction: no table is
locked for long, concurrent sends and fan-outs carry on, and a run stopped half-way loses
nothing; the next run goes on where it stopped (oldest rows first).
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from celery import shared_task
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from endpoints.app_settings import webhook_settings
from endpoints.models import EndpointSecret

from .celery import TASK_OPTIONS
from .models import ApiIdempotencyKey, Delivery, DeliveryAttempt, DeliveryStatus, Event, OrderingKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionReport:
    """What a retention run deleted, or with `report_only`, what it would delete."""

    succeeded_deliveries: int = 0
    failed_deliveries: int = 0
    cancelled_deliveries: int = 0
    attempts: int = 0
    events: int = 0
    expired_secrets: int = 0
    idempotency_keys: int = 0
    ordering_keys: int = 0
    report_only: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True)
class Cutoffs:
    """Rows last changed before these instants are old enough to go."""

    now: datetime
    succeeded: datetime
    failed: datetime
    events: datetime

    @classmethod
    def at(cls, now: datetime) -> "Cutoffs":
        succeeded_days = webhook_settings.RETENTION_SUCCEEDED_DAYS
        failed_days = webhook_settings.RETENTION_FAILED_DAYS
        return cls(
            now=now,
            succeeded=now - timedelta(days=succeeded_days),
            failed=now - timedelta(days=failed_days),
            # An event outlives every delivery it could have: it goes after the longer period.
            events=now - timedelta(days=max(succeeded_days, failed_days)),
        )


def purge_old_deliveries(*, report_only: bool = False, now: datetime | None = None) -> RetentionReport:
    """Delete finished deliveries past their retention period, with their attempts; then old
    events that have no deliveries left; then expired endpoint secrets.

    Succeeded deliveries go WEBHOOKS_RETENTION_SUCCEEDED_DAYS after they finished (`updated_at`),
    failed ones (the dead letter) and those an operator cancelled WEBHOOKS_RETENTION_FAILED_DAYS
    after (both are kept for operators to retry); pending ones never, however old. An event goes
    once it is older than the longer of the two periods, was fanned out and has no delivery left.
    Its idempotency key goes with it: publishing with the same key afterwards creates (and
    sends) a new event, so keys deduplicate only within that period.
    An expired secret goes unless it is the newest of its endpoint: every endpoint keeps at
    least one secret, and a live secret is never deleted.
    The customers' API's Idempotency-Key answers go after 24 hours. An ordering key goes once its
    last delivery was numbered longer ago than the longer period and none of its deliveries is
    left; a later event of that key starts its sequence at 1 again.

    With `report_only`, counts exactly what a run at the same `now` would delete and deletes
    nothing.
    """
    cutoffs = Cutoffs.at(now or timezone.now())
    if report_only:
        return _count_purgeable(cutoffs)

    batch_size = webhook_settings.RETENTION_BATCH_SIZE
    succeeded, succeeded_attempts = _purge_deliveries(DeliveryStatus.SUCCEEDED, cutoffs.succeeded, batch_size)
    failed, failed_attempts = _purge_deliveries(DeliveryStatus.FAILED, cutoffs.failed, batch_size)
    cancelled, cancelled_attempts = _purge_deliveries(DeliveryStatus.CANCELLED, cutoffs.failed, batch_size)
    events = _delete_in_batches(
        lambda: _old_events(cutoffs).filter(~Exists(Delivery.objects.filter(event_id=OuterRef("pk")))),
        Event,
        batch_size,
    )
    secrets = _delete_in_batches(lambda: _expired_secrets(cutoffs), EndpointSecret, batch_size)
    keys = _delete_in_batches(lambda: _old_idempotency_keys(cutoffs), ApiIdempotencyKey, batch_size)
    chains = _delete_in_batches(lambda: _idle_ordering_keys(cutoffs), OrderingKey, batch_size)
    return RetentionReport(
        succeeded_deliveries=succeeded,
        failed_deliveries=failed,
        cancelled_deliveries=cancelled,
        attempts=succeeded_attempts + failed_attempts + cancelled_attempts,
        events=events,
        expired_secrets=secrets,
        idempotency_keys=keys,
        ordering_keys=chains,
    )


def _old_deliveries(status: str, cutoff: datetime) -> QuerySet:
    # Served by the (status, updated_at) index, oldest first.
    return Delivery.objects.filter(status=status, updated_at__lt=cutoff).order_by("updated_at")


def _purgeable_deliveries(cutoffs: Cutoffs) -> Q:
    return Q(status=DeliveryStatus.SUCCEEDED, updated_at__lt=cutoffs.succeeded) | Q(
        status__in=[DeliveryStatus.FAILED, DeliveryStatus.CANCELLED], updated_at__lt=cutoffs.failed
    )


def _old_events(cutoffs: Cutoffs) -> QuerySet:
    # Never an event still waiting for its fan-out: it has deliveries to come (the sweep
    # keeps retrying it). No order: there is no index on created_at alone, and a plain scan
    # stops at the first batch of matches.
    return Event.objects.filter(created_at__lt=cutoffs.events, fanned_out_at__isnull=False)


def _expired_secrets(cutoffs: Cutoffs) -> QuerySet:
    newer = EndpointSecret.objects.filter(endpoint_id=OuterRef("endpoint_id")).filter(
        Q(created_at__gt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id"))
    )
    return EndpointSecret.objects.filter(expires_at__lte=cutoffs.now).filter(Exists(newer))


def _old_idempotency_keys(cutoffs: Cutoffs) -> QuerySet:
    # The API's Idempotency-Key answers are kept 24 hours (deliveries/api/idempotency.py).
    return ApiIdempotencyKey.objects.filter(created_at__lt=cutoffs.now - ApiIdempotencyKey.KEPT_FOR)


def _idle_ordering_keys(cutoffs: Cutoffs, left: Q | None = None) -> QuerySet:
    """Ordering keys whose last delivery was numbered before the longer retention period and that
    have no delivery left (none but those `left` excludes, when counting ahead of a purge):
    forgotten; a later event of the key starts at sequence 1 again."""
    deliveries = Delivery.objects.filter(endpoint_id=OuterRef("endpoint_id"), ordering_key=OuterRef("key"))
    if left is not None:
        deliveries = deliveries.exclude(left)
    return OrderingKey.objects.filter(updated_at__lt=cutoffs.events).filter(~Exists(deliveries))


def _count_purgeable(cutoffs: Cutoffs) -> RetentionReport:
    purgeable = _purgeable_deliveries(cutoffs)
    kept = Delivery.objects.filter(event_id=OuterRef("pk")).exclude(purgeable)
    return RetentionReport(
        succeeded_deliveries=_old_deliveries(DeliveryStatus.SUCCEEDED, cutoffs.succeeded).count(),
        failed_deliveries=_old_deliveries(DeliveryStatus.FAILED, cutoffs.failed).count(),
        cancelled_deliveries=_old_deliveries(DeliveryStatus.CANCELLED, cutoffs.failed).count(),
        attempts=DeliveryAttempt.objects.filter(delivery__in=Delivery.objects.filter(purgeable)).count(),
        # Events the delivery purge leaves without deliveries count too: a real run deletes them.
        events=_old_events(cutoffs).filter(~Exists(kept)).count(),
        expired_secrets=_expired_secrets(cutoffs).count(),
        idempotency_keys=_old_idempotency_keys(cutoffs).count(),
        ordering_keys=_idle_ordering_keys(cutoffs, purgeable).count(),
        report_only=True,
    )


def _take_batch(queryset: QuerySet, batch_size: int) -> list:
    # SKIP LOCKED: a row another transaction holds (an operator's retry, a fan-out inserting a
    # delivery for the event) is left for the next run instead of making this one wait.
    return list(queryset.select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch_size])


def _purge_deliveries(status: str, cutoff: datetime, batch_size: int) -> tuple[int, int]:
    """Delete old deliveries of one status and their attempts; return (deliveries, attempts)."""
    deliveries = attempts = 0
    while True:
        with transaction.atomic():
            ids = _take_batch(_old_deliveries(status, cutoff), batch_size)
            if not ids:
                break
            # Attempts first and by one statement; Delivery.delete() then finds none to cascade to.
            attempts += DeliveryAttempt.objects.filter(delivery_id__in=ids).delete()[0]
            deliveries += Delivery.objects.filter(pk__in=ids).only("pk").delete()[1].get(Delivery._meta.label, 0)
        if len(ids) < batch_size:
            break
    return deliveries, attempts


def _delete_in_batches(select: Callable[[], QuerySet], model: type, batch_size: int) -> int:
    """Delete the rows `select()` finds, `batch_size` ids per transaction; return how many."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = _take_batch(select(), batch_size)
            if not ids:
                break
            deleted += model.objects.filter(pk__in=ids).only("pk").delete()[1].get(model._meta.label, 0)
        if len(ids) < batch_size:
            break
    return deleted


@shared_task(name="deliveries.retention", **TASK_OPTIONS)
def retention_task(report_only: bool = False) -> dict:
    """Beat's daily purge (see purge_old_deliveries); logs one line with the counts."""
    report = purge_old_deliveries(report_only=report_only)
    logger.info(
        "retention: report_only=%s succeeded_deliveries=%s failed_deliveries=%s cancelled_deliveries=%s "
        "attempts=%s events=%s expired_secrets=%s",
        report.report_only,
        report.succeeded_deliveries,
        report.failed_deliveries,
        report.cancelled_deliveries,
        report.attempts,
        report.events,
        report.expired_secrets,
    )
    return report.as_dict()
