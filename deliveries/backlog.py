"""Why pending deliveries wait, for operators: per delivery, per endpoint, per ordering key.

Reads the scheduling state deliveries.scheduling writes and names it in an operator's words,
one `Waiting` value per pending delivery:

- `due` (next attempt time passed, nobody sending it) and `sending` (a worker holds its lease);
- `retry` (the retry schedule) and `rate_limit` (its endpoint's rate limit: until a slot frees);
- parked: `disabled`, `unverified`, `breaker`, `ordering` (behind an earlier delivery of its
  ordering key), or `unrecorded` (parked before reasons were recorded: it waits for its endpoint).

Every figure here costs a fixed number of queries however many rows it covers: the admin's
lists and `webhook_stats` call these for a whole page or the whole table at once.
"""

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from django.db import models
from django.db.models import Case, Count, Q, Value, When
from django.utils import timezone

from endpoints.models import Endpoint

from .models import Delivery, DeliveryStatus, ParkedReason
from .ordering import blocking_heads, chains_match

__all__ = [
    "PARKED",
    "Chain",
    "ChainFigures",
    "Waiting",
    "backlog_by_endpoint",
    "blocked_chains",
    "blocking_heads",
    "chain_figures",
    "heads_of_waiting",
    "lowered_rate_of",
    "rate_limit_of",
    "rate_limit_text",
    "waiting_condition",
    "waiting_of",
]

Chain = tuple[int, str]  # (endpoint id, ordering key), as in deliveries.ordering


class Waiting(models.TextChoices):
    """What a pending delivery waits for (the values are the admin filter's and the counts' keys)."""

    DUE = "due", "Due now"
    SENDING = "sending", "Being sent"
    RETRY = "retry", "Retry schedule"
    RATE_LIMIT = ParkedReason.RATE_LIMIT.value, ParkedReason.RATE_LIMIT.label
    BREAKER = ParkedReason.BREAKER.value, ParkedReason.BREAKER.label
    ORDERING = ParkedReason.ORDERING.value, ParkedReason.ORDERING.label
    DISABLED = ParkedReason.DISABLED.value, ParkedReason.DISABLED.label
    UNVERIFIED = ParkedReason.UNVERIFIED.value, ParkedReason.UNVERIFIED.label
    # Parked before reasons were recorded (it waited for its endpoint), or for no reason known here.
    UNRECORDED = "unrecorded", "Its endpoint (no reason recorded)"


# The parked states: pending with no due time, until what they name ends.
PARKED = (Waiting.BREAKER, Waiting.ORDERING, Waiting.DISABLED, Waiting.UNVERIFIED, Waiting.UNRECORDED)
_RECORDED = [state.value for state in PARKED if state != Waiting.UNRECORDED]


def _unclaimed(now: datetime) -> Q:
    # As scheduling.claim sees it: a lease that has lapsed is no lease.
    return Q(locked_until__isnull=True) | Q(locked_until__lt=now)


def waiting_condition(state: str, now: datetime) -> Q:
    """The condition of the deliveries in `state` (a `Waiting` value) at `now`."""
    pending = Q(status=DeliveryStatus.PENDING)
    if state == Waiting.SENDING:
        return pending & Q(locked_until__gte=now)
    pending &= _unclaimed(now)
    if state == Waiting.DUE:
        return pending & Q(next_attempt_at__lte=now)
    if state == Waiting.RATE_LIMIT:
        return pending & Q(next_attempt_at__gt=now, parked_reason=ParkedReason.RATE_LIMIT)
    if state == Waiting.RETRY:
        return pending & Q(next_attempt_at__gt=now) & ~Q(parked_reason=ParkedReason.RATE_LIMIT)
    if state == Waiting.UNRECORDED:
        return pending & Q(next_attempt_at__isnull=True) & ~Q(parked_reason__in=_RECORDED)
    if state in PARKED:
        return pending & Q(next_attempt_at__isnull=True, parked_reason=state)
    raise ValueError(f"unknown waiting state {state!r}")


def waiting_of(delivery: Delivery, now: datetime) -> str | None:
    """The `Waiting` state of one delivery (None when it is not pending); the same answer as
    `waiting_condition`, without a query."""
    if delivery.status != DeliveryStatus.PENDING:
        return None
    if delivery.locked_until is not None and delivery.locked_until >= now:
        return Waiting.SENDING
    if delivery.next_attempt_at is None:
        return Waiting(delivery.parked_reason) if delivery.parked_reason in _RECORDED else Waiting.UNRECORDED
    if delivery.next_attempt_at <= now:
        return Waiting.DUE
    return Waiting.RATE_LIMIT if delivery.parked_reason == ParkedReason.RATE_LIMIT else Waiting.RETRY


def _waiting_case(now: datetime) -> Case:
    return Case(
        *(When(waiting_condition(state, now), then=Value(state.value)) for state in Waiting),
        default=Value(""),
        output_field=models.CharField(),
    )


def backlog_by_endpoint(endpoint_ids: Iterable[int], now: datetime) -> dict[int, Counter]:
    """{endpoint id: Counter of its pending deliveries by `Waiting` state}, in one grouped query
    (the pending deliveries of those endpoints, from the (endpoint, status, created_at) index)."""
    ids = list(endpoint_ids)
    if not ids:
        return {}
    rows = (
        Delivery.objects.filter(endpoint_id__in=ids, status=DeliveryStatus.PENDING)
        .annotate(waiting=_waiting_case(now))
        .order_by()
        .values_list("endpoint_id", "waiting")
        .annotate(n=Count("pk"))
    )
    backlog: dict[int, Counter] = {endpoint_id: Counter() for endpoint_id in ids}
    for endpoint_id, state, n in rows:
        backlog[endpoint_id][state] += n
    return backlog


def heads_of_waiting(deliveries: Iterable[Delivery], now: datetime) -> dict[Chain, Delivery]:
    """For those of `deliveries` that wait behind their ordering key, the delivery each chain
    waits for (ordering.blocking_heads, the one definition of it), in one query for them all or
    none when no delivery waits for ordering. Admin's lists and the API's pages share it."""
    behind = [delivery for delivery in deliveries if waiting_of(delivery, now) == Waiting.ORDERING]
    return blocking_heads((delivery.endpoint_id, delivery.ordering_key) for delivery in behind)


class ChainFigures(NamedTuple):
    """One chain's pending deliveries: how many, and how many of them wait behind its head."""

    pending: int = 0
    behind: int = 0


def chain_figures(chains: Iterable[Chain]) -> dict[Chain, ChainFigures]:
    """{chain: its pending and waiting-behind counts}, in one grouped query (the partial index
    of pending ordered deliveries)."""
    chains = set(chains)
    if not chains:
        return {}
    rows = (
        Delivery.objects.filter(chains_match(sorted(chains)), status=DeliveryStatus.PENDING)
        .order_by()
        .values_list("endpoint_id", "ordering_key")
        .annotate(pending=Count("pk"), behind=Count("pk", filter=Q(parked_reason=ParkedReason.ORDERING)))
    )
    figures = {chain: ChainFigures() for chain in chains}
    figures.update({(endpoint_id, key): ChainFigures(pending, behind) for endpoint_id, key, pending, behind in rows})
    return figures


def blocked_chains(limit: int, endpoint_ids: Iterable[int] | None = None) -> list[tuple[Chain, int]]:
    """The `limit` chains with the most deliveries waiting behind their head, with that number,
    most first: one grouped query over the pending ordered deliveries."""
    waiting = Delivery.objects.filter(status=DeliveryStatus.PENDING, parked_reason=ParkedReason.ORDERING)
    if endpoint_ids is not None:
        waiting = waiting.filter(endpoint_id__in=list(endpoint_ids))
    rows = (
        waiting.order_by()
        .values_list("endpoint_id", "ordering_key")
        .annotate(n=Count("pk"))
        .order_by("-n", "endpoint_id", "ordering_key")[:limit]
    )
    return [((endpoint_id, key), n) for endpoint_id, key, n in rows]


def rate_limit_of(endpoint: Endpoint) -> tuple[int, float] | None:
    """(requests, per seconds) when the endpoint has a rate limit, else None (also on a schema
    without the rate limit fields)."""
    limit = getattr(endpoint, "rate_limit", None)
    if not limit:
        return None
    return limit, getattr(endpoint, "rate_limit_period", None) or 1


def lowered_rate_of(endpoint: Endpoint) -> tuple[int, datetime | None] | None:
    """(effective limit, when a 429 lowered it) while a 429 keeps an endpoint's rate limit below
    the configured one (endpoints/rate_adaptation.py), else None."""
    limit, current = getattr(endpoint, "rate_limit", None), getattr(endpoint, "rate_limit_current", None)
    if not limit or current is None or current >= limit:
        return None
    return current, endpoint.rate_limit_lowered_at


def rate_limit_text(endpoint: Endpoint) -> str | None:
    """The rate limit as an operator reads it ("60 requests per 10 s"; after a 429, "60 requests
    per 10 s (now 15: lowered after a 429 at 14:03:07, recovering)"), or None."""
    rate = rate_limit_of(endpoint)
    if rate is None:
        return None
    limit, period = rate
    text = f"{limit} {'request' if limit == 1 else 'requests'} per {period:g} s"
    lowered = lowered_rate_of(endpoint)
    if lowered is None:
        return text
    current, lowered_at = lowered
    when = f" at {timezone.localtime(lowered_at):%H:%M:%S}" if lowered_at else ""
    return f"{text} (now {current}: lowered after a 429{when}, recovering)"
