"""The one writer of a delivery's scheduling state: every state, every transition.

A delivery is in exactly one of these states (the fields that encode it in brackets):

- **due**: pending, `next_attempt_at` passed, no live lease. A worker may claim it. If its
  `queued_until` lies ahead a broker message is on its way; past it the sweep enqueues it again.
- **waiting**: pending, `next_attempt_at` ahead: the retry schedule (`parked_reason` empty) or the
  endpoint's rate limit (`rate_limit`: it waits for a free slot, not for a retry).
- **claimed**: pending, `locked_until` ahead: one worker is sending it.
- **parked**: pending, `next_attempt_at` null, waiting for something other than time, named by
  `parked_reason`: its endpoint disabled, unverified or paused by its circuit breaker, or an
  earlier delivery of its ordering key not yet finished. No attempt is spent, nothing fails.
- **succeeded**, **failed** (retries spent or a final answer), **cancelled** (by an operator):
  finished; `next_attempt_at` null.

Transitions, each a function here:

| from | to | function | who |
|---|---|---|---|
| (new) | due, or parked | `initial_state` | fan-out, test events |
| due | claimed | `claim` | the send path |
| claimed | due | `release` | the send path (batch out of time, or its endpoint failing) |
| claimed | parked | `park` | the send path (endpoint disabled / unverified / breaker open) |
| claimed | waiting (rate) | `wait_for_rate` | the send path (no free slot of the rate limit) |
| claimed | succeeded, waiting (retry), failed | `after_attempt` + `settle` | attempt records |
| due | due and queued | `mark_queued` | the sweep |
| parked | due | `unpark` | breaker release, endpoint enabled or verified, ordering |
| failed, cancelled, pending | due | `retry_now` | operators (admin, API, commands) |
| pending, failed | cancelled | `cancel` | operators |

Every UPDATE of a claimed delivery is conditional on the lease (`locked_until=lease`): a worker
whose lease lapsed (it froze past it and another took over) changes nothing.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import SystemRandom

from django.db.models import Q, QuerySet
from django.utils import timezone

from endpoints.app_settings import webhook_settings
from endpoints.models import Endpoint

from .models import Delivery, DeliveryStatus, ParkedReason

__all__ = [
    "ENDPOINT_REASONS",
    "Changes",
    "after_attempt",
    "cancel",
    "claim",
    "endpoint_block",
    "initial_state",
    "lease_seconds",
    "mark_queued",
    "park",
    "parked",
    "release",
    "retry_now",
    "settle",
    "unpark",
    "wait_for_rate",
]

secrets_random = SystemRandom()

# The reasons that are about the endpoint itself: enabling, verifying it or closing its breaker
# ends them. "" is a row parked before reasons were recorded (it waited for its endpoint too).
ENDPOINT_REASONS = (ParkedReason.NONE, ParkedReason.DISABLED, ParkedReason.UNVERIFIED, ParkedReason.BREAKER)


def lease_seconds() -> float:
    """How long a claim lasts: longer than any send can take, so it only lapses if the worker died."""
    return webhook_settings.CONNECT_TIMEOUT + webhook_settings.REQUEST_TIMEOUT + webhook_settings.CLAIM_MARGIN


def requeue_window(now: datetime) -> datetime:
    """Until when the sweep leaves a freshly enqueued delivery alone (its message is on the way)."""
    return now + timedelta(seconds=webhook_settings.REQUEUE_AFTER)


def endpoint_block(endpoint: Endpoint, now: datetime) -> str | None:
    """Why a new delivery to `endpoint` must be parked, or None when it may go out now."""
    if not endpoint.is_active:
        return ParkedReason.DISABLED
    if endpoint.awaits_verification:
        return ParkedReason.UNVERIFIED
    if endpoint.paused_until is not None and endpoint.paused_until > now:
        return ParkedReason.BREAKER
    return None


def initial_state(now: datetime, reason: str | None) -> dict:
    """The scheduling fields of a new delivery: due now (its message enqueued after commit), or
    parked for `reason`."""
    if reason is None:
        return {"next_attempt_at": now, "queued_until": requeue_window(now), "parked_reason": ParkedReason.NONE}
    return {"next_attempt_at": None, "queued_until": None, "parked_reason": reason}


def parked(reasons: Iterable[str] = ENDPOINT_REASONS) -> Q:
    """The condition of deliveries parked for one of `reasons`."""
    return Q(status=DeliveryStatus.PENDING, next_attempt_at__isnull=True, parked_reason__in=list(reasons))


def claim(delivery_ids: list[int], now: datetime) -> datetime | None:
    """Take the lease on those of `delivery_ids` that are due and unclaimed; return the lease
    (the claimed rows are those whose `locked_until` equals it), or None if none was ours.

    One conditional UPDATE: of concurrent claimers exactly one matches each row. The lease
    carries random microseconds so that two claimers in the same instant hold different values.
    """
    lease = now + timedelta(seconds=lease_seconds(), microseconds=secrets_random.randrange(1_000_000))
    claimed = (
        Delivery.objects.filter(pk__in=delivery_ids, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=lease)
    )
    return lease if claimed else None


def release(delivery_ids: list[int], lease: datetime) -> None:
    """Give back claimed deliveries unsent: still due, for another task to send."""
    Delivery.objects.filter(pk__in=delivery_ids, locked_until=lease).update(locked_until=None)


def park(delivery_ids: list[int], lease: datetime, reason: str) -> int:
    """Keep claimed deliveries pending without a due time, spending no attempt, until what
    `reason` names ends (`unpark`)."""
    return Delivery.objects.filter(pk__in=delivery_ids, locked_until=lease).update(
        next_attempt_at=None, locked_until=None, queued_until=None, parked_reason=reason, updated_at=timezone.now()
    )


def wait_for_rate(delivery_ids: list[int], lease: datetime, until: datetime, queued_until: datetime | None) -> int:
    """Claimed deliveries over their endpoint's rate limit wait, unsent and spending no attempt,
    until a slot is expected to free: a countdown message sends them then (`queued_until` set,
    the sweep leaves them alone meanwhile), or the sweep does (`queued_until` None)."""
    return Delivery.objects.filter(pk__in=delivery_ids, locked_until=lease).update(
        next_attempt_at=until,
        locked_until=None,
        queued_until=queued_until,
        parked_reason=ParkedReason.RATE_LIMIT,
        updated_at=timezone.now(),
    )


@dataclass(frozen=True)
class Changes:
    """The new scheduling state of a delivery after an attempt (see `after_attempt`)."""

    status: str
    next_attempt_at: datetime | None
    queued_until: datetime | None

    def fields(self) -> dict:
        return {
            "status": self.status,
            "next_attempt_at": self.next_attempt_at,
            "queued_until": self.queued_until,
            "locked_until": None,
            "parked_reason": ParkedReason.NONE,
        }


def after_attempt(status: str, now: datetime, delay: float | None) -> Changes:
    """Succeeded or failed: finished. Pending: the next try waits `delay` seconds; a short wait
    goes to the broker as a countdown (its message is expected, so the sweep leaves it alone
    until a requeue interval after it is due), a long one waits in the database for the sweep."""
    if status != DeliveryStatus.PENDING:
        return Changes(status, None, None)
    next_attempt_at = now + timedelta(seconds=delay)
    soon = delay <= webhook_settings.MAX_COUNTDOWN
    return Changes(status, next_attempt_at, requeue_window(next_attempt_at) if soon else None)


def settle(delivery_ids: list[int], lease: datetime, fields: dict, now: datetime) -> int:
    """Write the state an attempt left (`Changes.fields()` plus the attempt's own columns) on
    the claimed deliveries still held under `lease`; return how many were."""
    return Delivery.objects.filter(pk__in=delivery_ids, locked_until=lease).update(**fields, updated_at=now)


def mark_queued(delivery_ids: list[int], now: datetime) -> None:
    """The sweep enqueued these due deliveries: leave them alone for a requeue interval."""
    Delivery.objects.filter(id__in=delivery_ids).update(queued_until=requeue_window(now))


def unpark(
    queryset: QuerySet, now: datetime, reasons: Iterable[str] = ENDPOINT_REASONS, limit: int | None = None
) -> int:
    """Make the deliveries of `queryset` parked for one of `reasons` due now (all, or the
    `limit` oldest); return how many. The sweep or the caller enqueues them."""
    waiting = queryset.filter(parked(reasons)).order_by("id")
    if limit is not None:
        waiting = Delivery.objects.filter(pk__in=list(waiting.values_list("pk", flat=True)[:limit]))
    return waiting.update(next_attempt_at=now, queued_until=None, parked_reason=ParkedReason.NONE)


def retry_now(delivery_ids: list[int], now: datetime) -> int:
    """An operator's retry: pending, due now, unclaimed, its message on the way (so the sweep
    does not send it first as an automatic attempt). The caller has locked the rows and
    checked they may be retried."""
    return Delivery.objects.filter(pk__in=delivery_ids).update(
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
        locked_until=None,
        queued_until=requeue_window(now),
        parked_reason=ParkedReason.NONE,
        updated_at=now,
    )


def cancel(delivery_ids: list[int], now: datetime) -> int:
    """An operator's cancel: finished without being received; its ordering key moves on. The
    caller has locked the rows and checked none is being sent."""
    return Delivery.objects.filter(pk__in=delivery_ids).update(
        status=DeliveryStatus.CANCELLED,
        next_attempt_at=None,
        locked_until=None,
        queued_until=None,
        parked_reason=ParkedReason.NONE,
        updated_at=now,
    )
