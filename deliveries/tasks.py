"""Celery tasks. Names are explicit and stable: messages in flight survive a refactor.

Every task takes ids, never payloads: PostgreSQL holds the truth, a message only says
"look at X now". Every task is safe to run twice.

Two lanes carry sends: first attempts to healthy endpoints go to `webhooks.deliveries`;
retries, and every send to an endpoint that has just failed, go to `webhooks.retries`. A fleet
gives each lane its own workers (Procfile), so an endpoint that times out only ever occupies
the retry lane's threads.
"""

import logging
from collections.abc import Iterable
from datetime import datetime

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from endpoints.app_settings import webhook_settings

from .breaker import release_after_pauses
from .celery import DELIVERY_QUEUE, RETRY_QUEUE, TASK_OPTIONS
from .fanout import fan_out_events
from .health import check_health
from .models import AttemptTrigger
from .ordering import release_stalled
from .retention import retention_task  # noqa: F401  (registers deliveries.retention)
from .sending import BatchResult, send_deliveries
from .sweeper import Due, events_never_fanned_out, take_due
from .verification import due_handshakes, verify_endpoint

logger = logging.getLogger(__name__)

# Workers keep their database connections across tasks (deliveries/celery.py). When the
# server dropped one (a restart, a failover, a pooler's idle timeout), the task that finds it
# fails with one of these, the connection is closed after it, and the task runs again a second
# later on a fresh one: a dropped connection costs a second, not a sweep interval. A send finds it
# at its claim, before anything is sent or leased. A connection dropped while a send's requests
# are in flight never reaches this: the send records them on a new connection itself
# (attempt_records.record_attempts); should that fail too, its deliveries stay leased, so the
# task running again claims none of them and sends nothing twice.
DATABASE_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_kwargs": {"max_retries": 3, "countdown": 1},
}


def enqueue_sends(
    delivery_ids: Iterable[int], eta: datetime | None = None, trigger: str | None = None, queue: str | None = None
) -> int:
    """Publish one send message per delivery over one broker connection; return how many.

    `trigger` (an AttemptTrigger, e.g. "manual") is recorded on the attempt; automatic sends
    leave it out. `queue`: the lane (default: the delivery lane).
    """
    kwargs = {"trigger": trigger} if trigger and trigger != AttemptTrigger.AUTOMATIC else None
    return _publish([[delivery_id] for delivery_id in delivery_ids], queue, eta=eta, kwargs=kwargs)


def enqueue_due(due: Iterable[Due]) -> int:
    """Publish the sends of due deliveries: those of one endpoint and lane in batches of
    WEBHOOKS_SEND_BATCH_SIZE (one message each), over one broker connection; return how many
    deliveries were enqueued."""
    size = webhook_settings.SEND_BATCH_SIZE
    groups: dict[tuple[int, bool], list[int]] = {}
    for item in due:
        groups.setdefault((item.endpoint_id, item.retry_lane), []).append(item.id)
    sent = 0
    for (_, retry_lane), ids in groups.items():
        queue = RETRY_QUEUE if retry_lane else DELIVERY_QUEUE
        sent += _publish([ids[i : i + size] for i in range(0, len(ids), size)], queue)
    return sent


def _publish(batches: list[list[int]], queue: str | None, eta: datetime | None = None, kwargs=None) -> int:
    """One message per batch (`deliveries.send` for one delivery, `deliveries.send_many` for
    more); return how many deliveries were enqueued.

    A failed publish is logged, not raised: the delivery rows still say they are due, and the
    sweep enqueues them again once their `queued_until` has passed.
    """
    total = sum(len(batch) for batch in batches)
    sent = 0
    if not total:
        return 0
    try:
        with send_delivery_task.app.producer_or_acquire() as producer:
            for batch in batches:
                if len(batch) == 1:
                    task, args = send_delivery_task, (batch[0],)
                else:
                    task, args = send_many_task, (batch,)
                task.apply_async(args, kwargs=kwargs, eta=eta, queue=queue or DELIVERY_QUEUE, producer=producer)
                sent += len(batch)
    except Exception:
        logger.exception("could not enqueue %s of %s deliveries; the sweep will retry", total - sent, total)
    return sent


@shared_task(name="deliveries.fan_out", **TASK_OPTIONS, **DATABASE_RETRY)
def fan_out_task(event_ids: str | list[str]) -> int:
    """Create the deliveries of an event (an id) or of several (a list) and enqueue them.

    With WEBHOOKS_FANOUT_SENDS_FIRST_BATCH (default on) the task sends the first batch of a
    healthy endpoint itself, after enqueueing the rest: for the common event with one or a few
    subscribers that saves a task and a trip through the broker per delivery. Returns how
    many deliveries were enqueued or sent.
    """
    deliveries = fan_out_events([event_ids] if isinstance(event_ids, str) else event_ids)
    due = [
        Due(delivery.pk, delivery.endpoint_id, delivery.endpoint.consecutive_failures > 0)
        for delivery in deliveries
        if delivery.next_attempt_at is not None
    ]
    first = _first_batch(due) if webhook_settings.FANOUT_SENDS_FIRST_BATCH else []
    queued = enqueue_due(item for item in due if item not in first)
    if first:
        try:
            batch = send_deliveries([item.id for item in first])
        except Exception:
            # The deliveries are committed: hand them to a send task (a lease this attempt may
            # have taken lapses like a dead worker's, then the sweep re-sends).
            logger.exception("fan-out: sending %s deliveries here failed; enqueueing them", len(first))
            return queued + enqueue_due(first)
        _follow_up(batch)
    return queued + len(first)


def _first_batch(due: list[Due]) -> list[Due]:
    """The first endpoint's first-attempt deliveries, at most one send batch of them."""
    first = next((item for item in due if not item.retry_lane), None)
    if first is None:
        return []
    same = [item for item in due if item.endpoint_id == first.endpoint_id and not item.retry_lane]
    return same[: webhook_settings.SEND_BATCH_SIZE]


@shared_task(name="deliveries.send", **TASK_OPTIONS, **DATABASE_RETRY)
def send_delivery_task(delivery_id: int, trigger: str = AttemptTrigger.AUTOMATIC) -> str | None:
    """Try one delivery now; a soon retry goes back to the broker with an ETA, a later one waits
    in the database for the sweep. `trigger` says who asked (an operator's retry: "manual")."""
    batch = send_deliveries([delivery_id], trigger=trigger)
    _follow_up(batch)
    return batch.outcomes[0].verdict if batch.outcomes else None


@shared_task(name="deliveries.send_many", **TASK_OPTIONS, **DATABASE_RETRY)
def send_many_task(delivery_ids: list[int], trigger: str = AttemptTrigger.AUTOMATIC) -> dict[str, int]:
    """Try several deliveries now (usually of one endpoint, over one connection)."""
    batch = send_deliveries(delivery_ids, trigger=trigger)
    _follow_up(batch)
    verdicts: dict[str, int] = {}
    for outcome in batch.outcomes:
        verdicts[outcome.verdict] = verdicts.get(outcome.verdict, 0) + 1
    return verdicts


def _follow_up(batch: BatchResult) -> None:
    """Soon retries back to the broker with their ETA; a batch's unsent rest back to a lane;
    deliveries waiting for their endpoint's rate limit to the broker for when a slot frees."""
    for outcome in batch.outcomes:
        if outcome.retry_at is not None:
            enqueue_sends([outcome.delivery_id], eta=outcome.retry_at, queue=RETRY_QUEUE)
    enqueue_due(Due(pk, endpoint_id, batch.released_failing) for pk, endpoint_id in batch.released)
    for ids, at in batch.rate_waits:
        if at is not None:  # else the sweep sends them when due
            _publish([ids], DELIVERY_QUEUE, eta=at)


@shared_task(name="deliveries.sweep_due", **TASK_OPTIONS)
def sweep_due_task() -> dict[str, int]:
    """Enqueue due deliveries and fan out forgotten events, in batches."""
    batch_size = webhook_settings.SWEEP_BATCH_SIZE
    events = events_never_fanned_out(batch_size)
    try:
        fan_out_size = webhook_settings.FANOUT_BATCH_SIZE
        for start in range(0, len(events), fan_out_size):
            fan_out_task.apply_async((events[start : start + fan_out_size],))
    except Exception:
        logger.exception("sweep: could not enqueue fan-out; the next sweep retries")
    released = release_after_pauses()
    handshakes = enqueue_handshakes(due_handshakes())
    queued = 0
    for _ in range(20):  # at most 20 batches a run; the next run goes on
        due = take_due(batch_size)
        queued += enqueue_due(due)
        if len(due) < batch_size:
            break
    if queued or events or released or handshakes:
        logger.info(
            "sweep: enqueued %s due deliveries, %s events to fan out, %s handshakes; released %s parked",
            queued,
            len(events),
            handshakes,
            released,
        )
    result = {"deliveries": queued, "events": len(events), "released": released}
    if handshakes:
        result["handshakes"] = handshakes
    return result


def enqueue_handshakes(endpoint_ids: list[int], countdown: float | None = None) -> int:
    """Publish the handshakes of these endpoints (deliveries.verify_endpoint); return how many.
    A failed publish is logged: the endpoints stay due, and the sweep enqueues them again. A
    handshake enqueued twice runs once (verification._claim)."""
    sent = 0
    try:
        for endpoint_id in endpoint_ids:
            verify_endpoint_task.apply_async((endpoint_id,), countdown=countdown)
            sent += 1
    except Exception:
        logger.exception("could not enqueue the handshakes of endpoints %s; the sweep will retry", endpoint_ids)
    return sent


@shared_task(name="deliveries.verify_endpoint", **TASK_OPTIONS, **DATABASE_RETRY)
def verify_endpoint_task(endpoint_id: int) -> bool | None:
    """Run an unverified endpoint's handshake if it is due; a refused one runs again after its
    wait: from here with a countdown when that is short, else from the sweep."""
    result = verify_endpoint(endpoint_id)
    if result is None:
        return None
    if result.retry_at is not None:
        wait = (result.retry_at - timezone.now()).total_seconds()
        if wait <= webhook_settings.MAX_COUNTDOWN:
            enqueue_handshakes([endpoint_id], countdown=max(wait, 0))
    return result.granted


@shared_task(name="deliveries.health_check", **TASK_OPTIONS)
def health_check_task() -> dict[str, int]:
    """Alert on endpoints whose success rate changed side of the threshold; auto-disable."""
    report = check_health()
    result = {"unhealthy": len(report.unhealthy), "recovered": len(report.recovered), "disabled": len(report.disabled)}
    if stalled := release_stalled():
        logger.warning("ordering keys moved on: deliveries %s waited for a head that no longer exists", stalled)
        result["ordering_released"] = len(stalled)
    return result
