"""Per-endpoint rate limits: at most `rate_limit` requests per `rate_limit_period` seconds to one
endpoint, from every worker process and host together.

How: a limited endpoint has a ring of `rate_limit` slots (RateLimitSlot rows, in the database all
workers share). A request goes out only on a slot whose `free_at` has passed. Taking a slot holds
it for the whole send; once the answers are in, `finish()` keeps it taken for one period more,
counted from a moment after the answer. A request reaches the receiver after its slot was taken
and before its answer came back, so two requests on one slot arrive more than a period apart, and
no window of one period, measured at the receiver, holds more than `rate_limit` requests.

    reservation = rate_limits.reserve(endpoint, len(batch), hold=timedelta(seconds=lease))
    ...send at most reservation.granted requests...
    rate_limits.finish(reservation, used=requests_started)
    if reservation.granted < len(batch):
        the rest wait until rate_limits.next_free_at(endpoint)

- Every time compared or stamped is the database's (statement_timestamp()), so workers whose
  clocks disagree still share one timeline. next_free_at() translates into the caller's clock.
- A worker that dies holding slots frees nothing: they stay taken until `hold` plus one period has
  passed (a request it started just before the hold ran out still counts for one period).
- A finish() that comes after the hold lapsed changes only the slots still stamped by its own
  reservation, never one another worker has taken since.
- Lowering the limit retires the slots beyond it once they are free (a busy one keeps its time,
  so lowering then raising again within a period cannot exceed the limit); raising adds free
  slots. Changing the period moves the slots still counting by the difference: the requests
  already made count under the new period.
- A receiver's 429 lowers the effective limit below the configured one for a while
  (rate_adaptation.py): the ring keeps its slots, and reservations take only those numbered
  below the effective limit, so the ones above it stay unused once free, and a busy one keeps
  its time as when the limit is lowered.
- Reservation on PostgreSQL is one statement (FOR UPDATE SKIP LOCKED: concurrent workers take
  different slots and never wait on each other); finish() is one more. SQLite (the quick-start
  demo: one host, one clock) takes a simpler path.

Cost, measured on PostgreSQL 15 on a shared two-core machine, 2 processes x 8 threads reserving
and finishing on one endpoint limited to 1000/s: one slot per reservation, 2 statements and 1.9 ms
of database CPU per request (one connection alone: 1.4 ms, 2.8 ms wall, two commits); ten per
reservation, 0.43 statements and 0.46 ms per request. A Redis Lua script doing the same two-phase
hold costs ~10x less (0.18 / 0.03 ms of Redis CPU per request), but hosts on RabbitMQ have no
Redis, PostgreSQL has one clock for every worker, and the cost is bounded by the limit itself:
endpoints without one cost nothing. Reserve a whole batch at once.

It lives in the endpoints app because the slots are endpoint state that Endpoint.save() keeps in
step with the limit, and endpoints never imports deliveries; it knows nothing of deliveries, only
of requests to an endpoint's URL.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connections, models
from django.db.models import F, Min
from django.db.models.functions import Now
from django.utils import timezone

from .rate_adaptation import ADAPT_SQL, ALLOWED_SQL, allowed_limit

__all__ = [
    "MAX_RATE_LIMIT",
    "MAX_RATE_LIMIT_PERIOD",
    "RATE_LIMIT_PERIOD_VALIDATORS",
    "RATE_LIMIT_VALIDATORS",
    "RateLimitSlot",
    "Reservation",
    "finish",
    "next_free_at",
    "rate_limit_errors",
    "reserve",
    "sync_slots",
]

MAX_RATE_LIMIT = 10_000
"""Requests per period at most: the ring has one row per request allowed, so this bounds the rows
of one endpoint (and the work of making them when the limit is set)."""
MAX_RATE_LIMIT_PERIOD = 86_400
"""Seconds: one day. Receivers state limits per second, minute, hour or day."""

# A free slot's time: any moment in the past will do; no clock is asked.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)

RATE_LIMIT_VALIDATORS = [
    MinValueValidator(1, "A rate limit allows at least 1 request per period; leave it empty for no limit."),
    MaxValueValidator(
        MAX_RATE_LIMIT,
        f"A rate limit allows at most {MAX_RATE_LIMIT} requests per period; leave it empty for no limit.",
    ),
]
RATE_LIMIT_PERIOD_VALIDATORS = [
    MinValueValidator(1, "The rate limit period is at least 1 second."),
    MaxValueValidator(MAX_RATE_LIMIT_PERIOD, f"The rate limit period is at most {MAX_RATE_LIMIT_PERIOD} seconds."),
]


def rate_limit_errors(rate_limit: int | None, period: int | None) -> dict[str, list[ValidationError]]:
    """The rule between the two fields: both or neither (a limit of 60 alone says nothing: per
    second? per hour?)."""
    if rate_limit is not None and period is None:
        message = "A rate limit needs its period: per how many seconds?"
        return {"rate_limit_period": [ValidationError(message, code="rate_limit")]}
    if rate_limit is None and period is not None:
        message = "A rate limit period needs a rate limit; clear both for no limit."
        return {"rate_limit": [ValidationError(message, code="rate_limit")]}
    return {}


class RateLimitSlot(models.Model):
    """One of the `rate_limit` slots of a limited endpoint: a request may use it when `free_at`
    has passed (by the database's clock). Rows are made when the limit is set, retired when it is
    lowered; only this module writes them."""

    # No index of its own: both below start with the endpoint, and every reservation rewrites
    # free_at, so each index more is one more write per request.
    endpoint = models.ForeignKey(
        "endpoints.Endpoint", on_delete=models.CASCADE, related_name="rate_limit_slots", db_index=False
    )
    number = models.PositiveIntegerField()
    free_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "number"], name="rate_limit_slot_number")]
        # A reservation reads the free slots earliest first and stops after the ones it takes:
        # when every slot is busy, it reads no row at all.
        indexes = [models.Index(fields=["endpoint", "free_at"], name="rate_limit_slot_free")]

    def __str__(self) -> str:
        return f"slot {self.number} of endpoint {self.endpoint_id}, free at {self.free_at}"


@dataclass(frozen=True)
class Reservation:
    """What reserve() granted: send at most `granted` requests now, then call finish().

    `held_until` is the time (database clock) stamped on the slots taken; finish() changes only
    slots that still carry it. For an endpoint without a limit everything asked is granted and
    there is nothing to finish."""

    endpoint_id: int
    requested: int
    slot_ids: tuple[int, ...] = ()
    held_until: datetime | None = None
    period: int = 0
    limited: bool = True

    @property
    def granted(self) -> int:
        return len(self.slot_ids) if self.limited else self.requested


def reserve(endpoint, count: int, hold: timedelta) -> Reservation:
    """Take up to `count` free slots of `endpoint` for requests to be sent now.

    `hold`: how long from now the last of these requests may still be reaching the receiver (the
    send's lease: connect plus request timeout plus margin). A slot is held that long plus one
    period, so a worker that dies mid-send never lets the limit be exceeded. Call finish() when
    the answers are in.

    The limit is read from the database in the same statement (a limit removed since `endpoint`
    was loaded grants everything), and so is the effective limit a 429 may have lowered, which
    the same statement raises again after a calm period (rate_adaptation.py);
    `endpoint.rate_limit` being None costs no query at all. Must run outside
    transaction.atomic(): a reservation rolled back after its requests went out would forget
    them.
    """
    if count < 0 or hold < timedelta(0):
        raise ValueError("count and hold must not be negative")
    if endpoint.rate_limit is None or count == 0:
        return Reservation(endpoint.pk, count, limited=endpoint.rate_limit is not None)
    connection = connections[RateLimitSlot.objects.db]
    if connection.in_atomic_block:
        raise RuntimeError(
            "rate_limits.reserve() must run outside transaction.atomic(): each reservation has to commit "
            "before its requests go out."
        )
    if connection.vendor == "postgresql":
        limit, period, held_until, slot_ids = _reserve_postgresql(connection, endpoint.pk, count, hold)
    else:
        limit, period, held_until, slot_ids = _reserve_portable(endpoint.pk, count, hold)
    if limit is None:
        return Reservation(endpoint.pk, count, limited=False)
    return Reservation(endpoint.pk, count, tuple(slot_ids), held_until, period)


def finish(reservation: Reservation, used: int) -> None:
    """The answers are in: the first `used` slots of `reservation` (requests started: any that may
    have reached the receiver) stay taken for one period from now; the others are free at once.
    Slots no longer carrying this reservation's time (its hold lapsed and another worker took
    them) are left alone."""
    if not 0 <= used <= reservation.granted:
        raise ValueError(f"used must be between 0 and {reservation.granted}, not {used}")
    if not reservation.slot_ids:
        return
    used_ids, unused_ids = list(reservation.slot_ids[:used]), list(reservation.slot_ids[used:])
    connection = connections[RateLimitSlot.objects.db]
    if connection.vendor == "postgresql":
        params = {
            "used": used_ids,
            "all": list(reservation.slot_ids),
            "held_until": reservation.held_until,
            "period": reservation.period,
        }
        with connection.cursor() as cursor:
            cursor.execute(FINISH_SQL, params)
    else:
        ours = RateLimitSlot.objects.filter(pk__in=reservation.slot_ids, free_at=reservation.held_until)
        now = timezone.now()
        ours.filter(pk__in=used_ids).update(free_at=now + timedelta(seconds=reservation.period))
        ours.filter(pk__in=unused_ids).update(free_at=now)


def next_free_at(endpoint) -> datetime | None:
    """When the earliest slot of `endpoint` frees, on the caller's clock (timezone.now() plus the
    wait by the database's clock), for scheduling the requests that got no slot; now or earlier
    when one is free. None when the endpoint has no limit (`endpoint.rate_limit` None: no query).

    One query; a ring found without its last slot (a limit written past Endpoint.save(), e.g. by
    QuerySet.update()) is completed then. Another worker may take that slot first: a hint, not a
    promise."""
    if endpoint.rate_limit is None:
        return None
    connection = connections[RateLimitSlot.objects.db]
    if connection.vendor == "postgresql":
        limit, incomplete, wait = _free_in_postgresql(connection, endpoint.pk)
    else:
        limit, incomplete, wait = _free_in_portable(endpoint.pk)
    if limit is None:
        return None
    if incomplete:
        _fill_ring(endpoint.pk, limit)
        wait = 0.0
    return timezone.now() + timedelta(seconds=max(wait or 0.0, 0.0))


def sync_slots(endpoint, previous_period: int | None = None) -> None:
    """Fit the ring of `endpoint` to its limit (Endpoint.save() calls this when the limit or period
    changed): shift every slot by a change of period, retire free slots beyond the limit (all
    free ones when there is no limit), add missing slots, free."""
    slots = RateLimitSlot.objects.filter(endpoint_id=endpoint.pk)
    limit, period = endpoint.rate_limit, endpoint.rate_limit_period
    if limit is not None and period and previous_period and period != previous_period:
        change = timedelta(seconds=period - previous_period)
        # The slots used within the last (new) period: free_at + change is when they free now.
        slots.filter(free_at__gt=Now() - max(change, timedelta(0))).update(free_at=F("free_at") + change)
    retired = slots.filter(free_at__lte=Now())
    if limit is not None:
        retired = retired.filter(number__gte=limit)
    retired.delete()
    if limit is not None:
        _fill_ring(endpoint.pk, limit)


# --- PostgreSQL ----------------------------------------------------------------------------------

SLOTS = "endpoints_ratelimitslot"
ENDPOINTS = "endpoints_endpoint"

# One statement: read the limit (the effective one: rate_adaptation.ALLOWED_SQL), take up to
# %(count)s free slots below it (earliest free first; rows other reservations are taking are
# skipped, not waited for), retire free slots beyond a lowered configured limit (read from the
# highest number down: one index probe that finds nothing, usually; the LIMIT keeps the planner
# on that index), and move the adaptive limit on (rate_adaptation.ADAPT_SQL: after a 429 only).
# Locked rows a concurrent reservation updated are re-checked against their new free_at before
# they are taken.
RESERVE_SQL = f"""
WITH ep AS (
    SELECT rate_limit AS lim, rate_limit_period AS period, {ALLOWED_SQL} AS allowed,
        rate_limit_current AS lowered, rate_limit_calm_since AS calm
    FROM {ENDPOINTS} WHERE id = %(endpoint)s
), picked AS (
    SELECT id FROM {SLOTS}
    WHERE endpoint_id = %(endpoint)s AND free_at <= statement_timestamp() AND number < (SELECT allowed FROM ep)
    ORDER BY free_at LIMIT %(count)s FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE {SLOTS} SET free_at = statement_timestamp() + make_interval(secs => %(hold)s + (SELECT period FROM ep))
    WHERE id IN (SELECT id FROM picked) RETURNING id, free_at
), retired AS (
    DELETE FROM {SLOTS} WHERE id = ANY(ARRAY(
        SELECT id FROM {SLOTS}
        WHERE endpoint_id = %(endpoint)s AND number >= (SELECT lim FROM ep) AND free_at <= statement_timestamp()
        ORDER BY number DESC LIMIT 100 FOR UPDATE SKIP LOCKED
    ))
), {ADAPT_SQL.strip()}
SELECT lim, period, (SELECT max(free_at) FROM taken), ARRAY(SELECT id FROM taken ORDER BY id) FROM ep
"""

# statement_timestamp(): this statement is sent after the last answer came in. Only the slots
# still stamped by this reservation (`held_until`) are ours to change.
FINISH_SQL = f"""
UPDATE {SLOTS}
SET free_at = CASE WHEN id = ANY(%(used)s) THEN statement_timestamp() + make_interval(secs => %(period)s)
                   ELSE statement_timestamp() END
WHERE id = ANY(%(all)s) AND free_at = %(held_until)s
"""

# The limit, whether the ring lacks its last slot (it was never made: a limit written past
# Endpoint.save()), and seconds until its earliest slot below the effective limit frees (an index
# probe, like a reservation).
FREE_IN_SQL = f"""
SELECT e.rate_limit,
    NOT EXISTS (SELECT FROM {SLOTS} WHERE endpoint_id = e.id AND number = e.rate_limit - 1),
    EXTRACT(EPOCH FROM (
        SELECT free_at FROM {SLOTS}
        WHERE endpoint_id = e.id AND number < LEAST(COALESCE(e.rate_limit_current, e.rate_limit), e.rate_limit)
        ORDER BY free_at LIMIT 1
    ) - statement_timestamp())::float
FROM {ENDPOINTS} e WHERE e.id = %s
"""


def _reserve_postgresql(connection, endpoint_id: int, count: int, hold: timedelta):
    params = {"endpoint": endpoint_id, "count": count, "hold": hold.total_seconds()}
    with connection.cursor() as cursor:
        cursor.execute(RESERVE_SQL, params)
        row = cursor.fetchone()
    return row if row is not None else (None, None, None, [])


def _free_in_postgresql(connection, endpoint_id: int):
    with connection.cursor() as cursor:
        cursor.execute(FREE_IN_SQL, [endpoint_id])
        row = cursor.fetchone()
    return row if row is not None else (None, False, None)


# --- Other databases (SQLite: the quick start, one host, one clock) --------------------------------


def _reserve_portable(endpoint_id: int, count: int, hold: timedelta):
    """Candidates first, then one conditional UPDATE per slot: of two workers after one slot,
    the second updates nothing."""
    from .models import Endpoint

    adaptive = ("rate_limit_current", "rate_limit_calm_since")
    row = Endpoint.objects.filter(pk=endpoint_id).values_list("rate_limit", "rate_limit_period", *adaptive).first()
    if row is None or row[0] is None:
        return None, None, None, []
    limit, period, current, calm_since = row
    now = timezone.now()
    allowed = allowed_limit(limit, period, current, calm_since, now)
    slots = RateLimitSlot.objects.filter(endpoint_id=endpoint_id)
    slots.filter(number__gte=limit, free_at__lte=now).delete()
    held_until = now + hold + timedelta(seconds=period)
    candidates = slots.filter(number__lt=allowed, free_at__lte=now).order_by("free_at").values_list("pk", flat=True)
    taken = [pk for pk in candidates[:count] if slots.filter(pk=pk, free_at__lte=now).update(free_at=held_until)]
    if taken and current is not None and (calm_since is None or allowed != current):  # as ADAPT_SQL
        Endpoint.objects.filter(pk=endpoint_id, rate_limit_current=current, rate_limit_calm_since=calm_since).update(
            rate_limit_current=allowed if allowed < limit else None, rate_limit_calm_since=now
        )
    return limit, period, held_until, sorted(taken)


def _free_in_portable(endpoint_id: int):
    from .models import Endpoint

    row = Endpoint.objects.filter(pk=endpoint_id).values_list("rate_limit", "rate_limit_current").first()
    if row is None or row[0] is None:
        return None, False, None
    limit, current = row
    slots = RateLimitSlot.objects.filter(endpoint_id=endpoint_id)
    earliest = slots.filter(number__lt=min(current or limit, limit)).aggregate(earliest=Min("free_at"))["earliest"]
    wait = (earliest - timezone.now()).total_seconds() if earliest else 0.0
    return limit, not slots.filter(number=limit - 1).exists(), wait


def _fill_ring(endpoint_id: int, limit: int) -> None:
    """Add the slots 0..limit-1 the endpoint lacks, free."""
    present = set(
        RateLimitSlot.objects.filter(endpoint_id=endpoint_id, number__lt=limit).values_list("number", flat=True)
    )
    RateLimitSlot.objects.bulk_create(
        [RateLimitSlot(endpoint_id=endpoint_id, number=n, free_at=LONG_AGO) for n in range(limit) if n not in present],
        batch_size=1000,
        ignore_conflicts=True,
    )
