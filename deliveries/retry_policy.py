"""When to try again: which outcomes are retried, and how long to wait.

Success is 2xx only. Connection errors, timeouts, 5xx, 408, 425 and 429 are retried; other
4xx and 3xx fail at once (WEBHOOKS_RETRY_ALL_NON_2XX=1 retries every non-2xx); 410 Gone fails
and disables the endpoint. The default schedule waits 5 s, 25 s, 125 s, ... (x5 each time)
capped at 12 h, so the last of 13 attempts falls about 3 days after the first. Each wait gets
jitter in [-j, +j] of itself (WEBHOOKS_RETRY_JITTER, default 20 %), so a retry never fires more
than 20 % early. `Retry-After` (seconds or an HTTP date) can lengthen a wait, never shorten it,
and at most to WEBHOOKS_MAX_RETRY_AFTER.
"""

import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from django.core.exceptions import ImproperlyConfigured

from endpoints.app_settings import webhook_settings

DEFAULT_SCHEDULE: tuple[float, ...] = (5, 25, 125, 625, 3125, 15625, *(12 * 3600,) * 6)
RETRYABLE_STATUSES = frozenset({408, 425, 429})


def parse_schedule(value: str) -> tuple[float, ...]:
    """Parse WEBHOOKS_RETRY_SCHEDULE ("5,25,125"): seconds to wait before each retry."""
    try:
        schedule = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ImproperlyConfigured(
            f"WEBHOOKS_RETRY_SCHEDULE must be comma-separated seconds such as '5,25,125', not {value!r}"
        ) from None
    if any(not 0 < delay < float("inf") for delay in schedule):
        raise ImproperlyConfigured("WEBHOOKS_RETRY_SCHEDULE waits must be positive finite numbers of seconds.")
    return schedule


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


class Verdict:
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    GONE = "gone"  # failed, and the endpoint is disabled


@dataclass(frozen=True)
class RetryPolicy:
    """The retry rules in force; `RetryPolicy.from_settings()` reads them at call time."""

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2
    retry_all_non_2xx: bool = False
    max_retry_after: float = 12 * 3600

    @classmethod
    def from_settings(cls) -> "RetryPolicy":
        raw = webhook_settings.RETRY_SCHEDULE
        return cls(
            schedule=parse_schedule(raw) if raw else DEFAULT_SCHEDULE,
            jitter=webhook_settings.RETRY_JITTER,
            retry_all_non_2xx=webhook_settings.RETRY_ALL_NON_2XX,
            max_retry_after=webhook_settings.MAX_RETRY_AFTER,
        )

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def classify(self, status: int | None) -> str:
        """The verdict for one attempt's HTTP status (None: no response at all)."""
        if status is None:
            return Verdict.RETRY
        if 200 <= status < 300:
            return Verdict.SUCCEEDED
        if status == 410:
            return Verdict.GONE
        if status >= 500 or status in RETRYABLE_STATUSES or self.retry_all_non_2xx:
            return Verdict.RETRY
        return Verdict.FAILED

    def delay_after(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based); None when exhausted."""
        if attempt >= self.max_attempts:
            return None
        base = self.schedule[attempt - 1]
        delay = base * (1 + (rng or random).uniform(-self.jitter, self.jitter))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay
