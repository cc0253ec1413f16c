"""Celery tasks. Names are explicit and stable: messages in flight survive a refactor.

Every task takes ids, never payloads: PostgreSQL holds the truth, a message only says
"look at X now". Every task is safe to run twice.
"""

import logging
from collections.abc import Iterable
from datetime import datetime

from celery import shared_task
from django.conf import settings

from .breaker import release_after_pauses
from .fanout import fan_out
from .health import check_health
from .models import AttemptTrigger
from .retention import retention_task  # noqa: F401  (registers deliveries.retention)
from .sending import send_delivery
from .sweeper import events_never_fanned_out, take_due_deliveries

logger = logging.getLogger(__name__)


def enqueue_sends(delivery_ids: Iterable[int], eta: datetime | None = None, trigger: str | None = None) -> int:
    """Publish one send message per delivery over one broker connection; return how many.

    `trigger` (an AttemptTrigger, e.g. "manual") is recorded on the attempt; automatic sends
    leave it out, so their messages stay exactly as before.

    A failed publish is logged, not raised: the delivery row still says it is due, and the
    sweep enqueues it again once its `queued_until` has passed.
    """
    sent = 0
    ids = list(delivery_ids)
    if not ids:
        return 0
    kwargs = {"trigger": trigger} if trigger and trigger != AttemptTrigger.AUTOMATIC else None
    try:
        with send_delivery_task.app.producer_or_acquire() as producer:
            for delivery_id in ids:
                send_delivery_task.apply_async((delivery_id,), kwargs=kwargs, eta=eta, producer=producer)
                sent += 1
    except Exception:
        logger.exception("could not enqueue %s of %s deliveries; the sweep will retry", len(ids) - sent, len(ids))
    return sent


@shared_task(name="deliveries.fan_out", acks_late=True, ignore_result=True)
def fan_out_task(event_id: str) -> int:
    """Create an event's deliveries and enqueue them."""
    return enqueue_sends(fan_out(event_id))


@shared_task(name="deliveries.send", acks_late=True, ignore_result=True)
def send_delivery_task(delivery_id: int, trigger: str = AttemptTrigger.AUTOMATIC) -> str | None:
    """Try one delivery now; a soon retry goes back to the broker with an ETA, a later one waits
    in the database for the sweep. `trigger` says who asked (an operator's retry: "manual")."""
    outcome = send_delivery(delivery_id, trigger=trigger)
    if outcome is None:
        return None
    if outcome.retry_at is not None:
        enqueue_sends([delivery_id], eta=outcome.retry_at)
    return outcome.verdict


@shared_task(name="deliveries.sweep_due", ignore_result=True)
def sweep_due_task() -> dict[str, int]:
    """Enqueue due deliveries and fan out forgotten events, in batches."""
    batch_size = settings.WEBHOOKS_SWEEP_BATCH_SIZE
    events = events_never_fanned_out(batch_size)
    try:
        for event_id in events:
            fan_out_task.apply_async((event_id,))
    except Exception:
        logger.exception("sweep: could not enqueue fan-out; the next sweep retries")
    released = release_after_pauses()
    queued = 0
    for _ in range(20):  # at most 20 batches a run; the next run goes on
        ids = take_due_deliveries(batch_size)
        queued += enqueue_sends(ids)
        if len(ids) < batch_size:
            break
    if queued or events or released:
        logger.info(
            "sweep: enqueued %s due deliveries, %s events to fan out; released %s parked", queued, len(events), released
        )
    return {"deliveries": queued, "events": len(events), "released": released}


@shared_task(name="deliveries.health_check", ignore_result=True)
def health_check_task() -> dict[str, int]:
    """Alert on endpoints whose success rate changed side of the threshold; auto-disable."""
    report = check_health()
    return {"unhealthy": len(report.unhealthy), "recovered": len(report.recovered), "disabled": len(report.disabled)}
