"""Adaptive rate limits (AIMD): an endpoint with a rate limit that answers 429 gets a lower
effective limit, which climbs back to its configured limit while the receiver stays calm.

- Decrease, multiplicative: a 429 halves the effective limit (at least 1), once per period at
  most. The 429s of one burst answer requests sent before the first of them was recorded: they
  lower it once, not down to 1.
- Increase, additive: one step per period with requests made and no 429, until the configured
  limit is reached (the effective limit is then null again). The step is a tenth of the
  configured limit, at least 1, rather than TCP's +1: a halving is made up in 5 calm periods
  (from 1, in 10) whatever the limit, where +1 would take 30 periods at 60 per 10 s (5 minutes)
  and 5,000 days at 10,000 per day.

State, on the endpoint (RateAdaptationMixin): `rate_limit_current` (the effective limit; null:
the configured one), `rate_limit_lowered_at` (the last decrease) and `rate_limit_calm_since`
(since when requests have gone out without a 429; null: none yet since the last 429).

Where, and what it costs (nothing at all for an endpoint without a limit):
- lower_after_429(): one conditional UPDATE, in the transaction that records a batch whose
  answer was a 429 (deliveries/attempt_records.py). Every 429 restarts the calm clock; only
  one a period after the last decrease lowers the limit again.
- The increase costs no query of its own: rate_limits.reserve() computes the limit it allows in
  its one statement (ALLOWED_SQL), and when it takes a slot it starts the calm clock or makes
  the step (ADAPT_SQL). That UPDATE skips an endpoint row someone else holds instead of waiting
  for it (an operator's save also rewrites the slots: waiting could deadlock), so the step is
  then made by a later reservation. It runs at most about twice per period.
- Times are the database's (statement_timestamp()), as everywhere in rate_limits.py.

Lowering never lets a window exceed the limit: reserve() takes only slots numbered below the
effective limit, and a busy slot above it keeps its time until it frees (see rate_limits.py).
Saving an endpoint with a new limit or period starts it over at the configured limit.
"""

import logging
from datetime import datetime, timedelta

from django.db import connections, models
from django.utils import timezone

__all__ = [
    "ADAPT_SQL",
    "ALLOWED_SQL",
    "RateAdaptationMixin",
    "allowed_limit",
    "lower_after_429",
    "raise_step",
]

logger = logging.getLogger(__name__)

RAISE_SHARE = 10
"""The increase per calm period is 1/RAISE_SHARE of the configured limit (at least 1)."""


def raise_step(limit: int) -> int:
    """Requests per period added back after a calm period: a tenth of `limit`, rounded up."""
    return (limit + RAISE_SHARE - 1) // RAISE_SHARE


class RateAdaptationMixin(models.Model):
    """Endpoint's adaptive rate limit: the effective limit and the times that move it."""

    rate_limit_current = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="Effective rate limit after 429 answers; empty: the limit."
    )
    rate_limit_lowered_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When a 429 last lowered the effective rate limit."
    )
    rate_limit_calm_since = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Requests made without a 429 since then (a step up each period).",
    )

    class Meta:
        abstract = True

    @property
    def effective_rate_limit(self) -> int | None:
        """The limit in force now (as loaded): the configured one unless a 429 lowered it."""
        if self.rate_limit is None:
            return None
        return min(self.rate_limit_current or self.rate_limit, self.rate_limit)

    def reset_rate_adaptation(self) -> None:
        """Forget what 429s taught: a limit or period set anew starts at the configured limit."""
        self.rate_limit_current = self.rate_limit_lowered_at = self.rate_limit_calm_since = None


def allowed_limit(limit: int, period: int, current: int | None, calm_since: datetime | None, now: datetime) -> int:
    """The limit a reservation at `now` may use: the effective one, one step higher once a calm
    period has passed (ALLOWED_SQL, for databases other than PostgreSQL)."""
    if current is None or current >= limit:
        return limit
    if calm_since is not None and calm_since + timedelta(seconds=period) <= now:
        return min(limit, current + raise_step(limit))
    return current


# --- in rate_limits.reserve()'s statement ----------------------------------------------------------

# An expression over the endpoints_endpoint row: the limit a reservation now may use.
ALLOWED_SQL = f"""CASE
    WHEN rate_limit_current IS NULL OR rate_limit_current >= rate_limit THEN rate_limit
    WHEN rate_limit_calm_since + make_interval(secs => rate_limit_period) <= statement_timestamp()
        THEN LEAST(rate_limit, rate_limit_current + (rate_limit + {RAISE_SHARE - 1}) / {RAISE_SHARE})
    ELSE rate_limit_current END"""

# A CTE of the reservation, after `ep` (lim, allowed, lowered, calm: the row as read) and `taken`
# (the slots it took): once a slot is taken, start the calm clock or make the step. The endpoint
# row is locked only then (the usual reservation neither locks nor writes it), and only if nobody
# holds it; it is written only if still as read (nobody lowered or stepped it meanwhile).
ADAPT_SQL = """
adapted AS (
    UPDATE endpoints_endpoint e
    SET rate_limit_current = NULLIF(ep.allowed, ep.lim), rate_limit_calm_since = statement_timestamp()
    FROM ep
    WHERE e.id = (
            SELECT id FROM endpoints_endpoint WHERE id = %(endpoint)s
                AND EXISTS (SELECT FROM ep WHERE lowered IS NOT NULL AND (calm IS NULL OR allowed <> lowered))
                AND EXISTS (SELECT FROM taken)
            FOR UPDATE SKIP LOCKED
        )
        AND e.rate_limit_current = ep.lowered AND e.rate_limit_calm_since IS NOT DISTINCT FROM ep.calm
)"""


# --- after a 429 ------------------------------------------------------------------------------------

LOWERING = (
    "(rate_limit_lowered_at IS NULL"
    " OR rate_limit_lowered_at + make_interval(secs => rate_limit_period) <= statement_timestamp())"
)

# SET reads the row as it was: every CASE sees the old rate_limit_lowered_at.
LOWER_SQL = f"""
UPDATE endpoints_endpoint SET
    rate_limit_current = CASE WHEN {LOWERING}
        THEN GREATEST(1, LEAST(COALESCE(rate_limit_current, rate_limit), rate_limit) / 2)
        ELSE rate_limit_current END,
    rate_limit_lowered_at = CASE WHEN {LOWERING} THEN statement_timestamp() ELSE rate_limit_lowered_at END,
    rate_limit_calm_since = NULL
WHERE id = %s AND rate_limit IS NOT NULL
RETURNING rate_limit_current, rate_limit_lowered_at = statement_timestamp(), rate_limit, rate_limit_period
"""


def lower_after_429(endpoint) -> None:
    """`endpoint` answered 429: halve its effective limit unless a 429 did so within the last
    period, and restart its calm clock. One UPDATE; nothing (no query) for an endpoint without
    a limit (`endpoint.rate_limit` None), whose 429's Retry-After only delays that delivery."""
    if endpoint.rate_limit is None:
        return
    from .models import Endpoint

    connection = connections[Endpoint.objects.db]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(LOWER_SQL, [endpoint.pk])
            row = cursor.fetchone()
    else:
        row = _lower_portable(Endpoint, endpoint.pk)
    if row is not None and row[1]:
        current, _, limit, period = row
        logger.warning(
            "endpoint %s answered 429: its rate limit of %s per %s s is %s for now",
            endpoint.pk,
            limit,
            period,
            current,
        )


def _lower_portable(model, endpoint_id: int):
    """LOWER_SQL for other databases (SQLite: one host, one clock): read, then write if unchanged."""
    rows = model.objects.filter(pk=endpoint_id, rate_limit__isnull=False)
    state = rows.values_list("rate_limit", "rate_limit_period", "rate_limit_current", "rate_limit_lowered_at").first()
    if state is None:
        return None
    limit, period, current, lowered_at = state
    now = timezone.now()
    lowering = lowered_at is None or lowered_at + timedelta(seconds=period) <= now
    if lowering:
        current = max(1, min(current or limit, limit) // 2)
        lowered_at = now
    rows.update(rate_limit_current=current, rate_limit_lowered_at=lowered_at, rate_limit_calm_since=None)
    return current, lowering, limit, period
