"""Sending deliveries: claim them, sign and POST each body, then record the attempts
(attempt_records: the verdict, the rows, the new states, written even if the database connection
died while the requests were in flight).

The claim is the first use of the database connection in a send: if the server dropped it,
the claim fails before anything is sent or leased, and the task runs again a second later on a
new connection (tasks.DATABASE_RETRY).
"""

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from requests.structures import CaseInsensitiveDict

from endpoints import rate_limits
from endpoints.app_settings import webhook_settings

from . import breaker, transport
from .attempt_records import AssessedAttempt, SendOutcome, assess, record_attempts
from .models import AttemptTrigger, Delivery, Event, ParkedReason
from .retry_policy import RetryPolicy, Verdict
from .scheduling import claim, lease_seconds, park, release, requeue_window, wait_for_rate
from .signing import SigningError, endpoint_signature_headers

__all__ = ["BatchResult", "SendOutcome", "render_body", "send_deliveries", "send_delivery"]

logger = logging.getLogger(__name__)


def render_body(event: Event) -> bytes:
    """The exact bytes sent (and signed) for an event, the same on every attempt:
    `{"id":..,"type":..,"timestamp":..,"data":<payload>}`, compact, UTF-8.

    `data` is spliced in as the text `publish()` serialized (`Event.payload_json`), not parsed
    and written again: the receiver gets the publisher's key order and number forms, which the
    `jsonb` copy has lost (see publishing.py). An event without that text (written before
    migration 0004, or with `payload` only) is sent as its `jsonb` value serializes, byte for
    byte what was sent for it before.
    """
    data = event.payload_json
    if data is None:
        data = json.dumps(event.payload, ensure_ascii=False, separators=(",", ":"))
    head = json.dumps(
        {
            "id": event.webhook_id,
            "type": event.type,
            "timestamp": event.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return f'{head[:-1]},"data":{data}}}'.encode()


def build_headers(delivery: Delivery, body: bytes, secrets: list[str], timestamp: int) -> CaseInsensitiveDict:
    """Custom headers first, ours after, so no custom header can replace a signature.

    Beside the signed ones, unsigned hints: `Webhook-Attempt` (1 on the first try of this
    delivery, 2 on its first retry...) and, for an event with an ordering key,
    `Webhook-Ordering-Key` and `Webhook-Sequence` (1, 2, 3... per endpoint and key), so a
    receiver can tell a retry from a replay and notice a gap."""
    endpoint = delivery.endpoint
    headers = CaseInsensitiveDict(endpoint.request_headers())
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": webhook_settings.USER_AGENT,
            **endpoint_signature_headers(endpoint, secrets, delivery.event.webhook_id, timestamp, body),
            "Webhook-Attempt": str(delivery.attempt_count + 1),
        }
    )
    if delivery.ordering_key is not None:
        headers["Webhook-Ordering-Key"] = delivery.ordering_key
        headers["Webhook-Sequence"] = str(delivery.sequence)
    return headers


@dataclass
class BatchResult:
    """What one call of send_deliveries did: an outcome per attempt made, and the deliveries
    it claimed but gave back unsent (`released`; `released_failing`: because their endpoint
    just failed, rather than because the batch ran out of time)."""

    outcomes: list[SendOutcome] = field(default_factory=list)
    released: list[tuple[int, int]] = field(default_factory=list)  # (delivery id, endpoint id)
    released_failing: bool = False
    # Deliveries over their endpoint's rate limit, waiting for a slot: (ids, when their message
    # should run), or None when the wait is too long for a countdown (the sweep sends them).
    rate_waits: list[tuple[list[int], datetime | None]] = field(default_factory=list)


def send_delivery(delivery_id: int, trigger: str = AttemptTrigger.AUTOMATIC) -> SendOutcome | None:
    """Make one attempt at a delivery if it is due and nobody else is sending it.

    Returns None when there was nothing to do (not due, claimed elsewhere, finished, gone).
    """
    outcomes = send_deliveries([delivery_id], trigger=trigger).outcomes
    return outcomes[0] if outcomes else None


def send_deliveries(delivery_ids: list[int], trigger: str = AttemptTrigger.AUTOMATIC) -> BatchResult:
    """Make one attempt at each of `delivery_ids` that is due and not being sent elsewhere.

    They are claimed and loaded together; those of one endpoint are sent one after the other
    over its kept-alive connection, and recorded together. A batch stops early, giving the
    rest back (BatchResult.released), when a send fails (the endpoint is in trouble: the rest
    go to the retry lane) or after WEBHOOKS_SEND_BATCH_SECONDS (a slow endpoint must not hold a
    worker thread for the length of the whole batch).
    """
    result = BatchResult()
    lease = claim(list(delivery_ids), timezone.now())
    if lease is None:
        return result
    claimed = Delivery.objects.select_related("event", "endpoint", "endpoint__client_certificate").filter(
        pk__in=delivery_ids, locked_until=lease
    )
    by_endpoint: dict[int, list[Delivery]] = {}
    for delivery in claimed.order_by("pk"):
        by_endpoint.setdefault(delivery.endpoint_id, []).append(delivery)
    for group in by_endpoint.values():
        _send_group(group, lease, trigger, result)
    return result


def _park(ids: list[int], lease: datetime, reason: str, endpoint) -> None:
    park(ids, lease, reason)
    logger.info("deliveries %s of endpoint %s parked: %s", ids, endpoint.pk, ParkedReason(reason).label)


def _send_group(group: list[Delivery], lease: datetime, trigger: str, result: BatchResult) -> None:
    """Send the claimed deliveries of one endpoint, in order, and record them."""
    endpoint = group[0].endpoint
    for delivery in group:
        delivery.endpoint = endpoint  # one instance: one breaker state, one secrets lookup
    ids = [delivery.pk for delivery in group]
    if not endpoint.is_active:
        # Kept, not failed: enabling the endpoint makes them due again (see receivers.py).
        _park(ids, lease, ParkedReason.DISABLED, endpoint)
        return
    if endpoint.awaits_verification:
        # Kept, not failed: a granted handshake or an operator's waiver makes them due (verification.py).
        _park(ids, lease, ParkedReason.UNVERIFIED, endpoint)
        return
    probing = endpoint.paused_until is not None
    if not breaker.may_send(endpoint, timezone.now()):
        _park(ids, lease, ParkedReason.BREAKER, endpoint)
        return
    if probing and len(group) > 1:
        # The breaker lets one probe through; the rest wait parked for its verdict.
        _park(ids[1:], lease, ParkedReason.BREAKER, endpoint)
        group = group[:1]

    reservation = None
    if endpoint.rate_limit is not None:
        reservation = rate_limits.reserve(endpoint, len(group), hold=timedelta(seconds=lease_seconds()))
        if reservation.granted < len(group):
            _wait_for_rate(group[reservation.granted :], lease, endpoint, result)
            group = group[: reservation.granted]
            if not group:
                return
    made: list[AssessedAttempt] = []
    try:
        rest = _send_each(group, endpoint, trigger, made)
    finally:
        if reservation is not None:
            _finish(reservation, len(made))
    result.outcomes += record_attempts(made, lease, trigger)
    if rest:
        release([delivery.pk for delivery in rest], lease)
        result.released += [(delivery.pk, delivery.endpoint_id) for delivery in rest]
        result.released_failing = result.released_failing or made[-1].verdict != Verdict.SUCCEEDED


def _send_each(group: list[Delivery], endpoint, trigger: str, made: list[AssessedAttempt]) -> list[Delivery]:
    """POST each delivery of `group` in turn, appending to `made`; stop at the first that does
    not succeed or when the batch's time is up, and return those left unsent."""
    secrets = endpoint.live_secrets()
    client_certificate = getattr(endpoint, "client_certificate", None)  # None: no mTLS
    policy = RetryPolicy.from_settings()
    # Within the lease's margin too: the last send may take a whole request timeout after this.
    stop_at = time.monotonic() + min(webhook_settings.SEND_BATCH_SECONDS, webhook_settings.CLAIM_MARGIN / 2)
    for index, delivery in enumerate(group):
        body = render_body(delivery.event)
        started_at = timezone.now()
        try:
            headers = build_headers(delivery, body, secrets, int(time.time()))
        except SigningError as error:  # never an unsigned request: a failed attempt instead
            headers = CaseInsensitiveDict()
            sent = transport.Result(error=transport.TransportError(transport.SIGNING_ERROR, str(error)))
        else:
            sent = transport.post(endpoint.url, body, dict(headers), client_certificate=client_certificate)
        made.append(assess(delivery, trigger, started_at, headers, body, sent, secrets, policy))
        if made[-1].verdict != Verdict.SUCCEEDED or time.monotonic() > stop_at:
            return group[index + 1 :]
    return []


def _finish(reservation: rate_limits.Reservation, used: int) -> None:
    """Give back the rate limit's slots the batch did not use. If that fails, they free by
    themselves once their hold has passed: later sends wait a little longer, nothing breaks."""
    try:
        rate_limits.finish(reservation, used)
    except Exception:
        logger.exception("endpoint %s: could not finish a rate-limit reservation", reservation.endpoint_id)


def _wait_for_rate(waiting: list[Delivery], lease: datetime, endpoint, result: BatchResult) -> None:
    """Deliveries that got no slot of their endpoint's rate limit wait for one, oldest first,
    spread over the times slots are expected to free (one send batch per slot-batch interval)
    so that they do not all wake at once; no attempt is spent. The effective limit counts (lower
    for a while after a 429: endpoints/rate_adaptation.py)."""
    now = timezone.now()
    # A slot held by a send in flight carries the send's worst case (its lease plus a period), but
    # frees a period after the answer, which usually comes at once: look again within a period.
    # With a few slots (a small limit, or one a 429 lowered) all of them are often in flight.
    soonest = min(rate_limits.next_free_at(endpoint) or now, now + timedelta(seconds=endpoint.rate_limit_period))
    first = max(soonest, now)
    size = webhook_settings.SEND_BATCH_SIZE
    interval = timedelta(seconds=endpoint.rate_limit_period * size / endpoint.effective_rate_limit)
    for start in range(0, len(waiting), size):
        ids = [delivery.pk for delivery in waiting[start : start + size]]
        until = first + interval * (start // size)
        soon = (until - now).total_seconds() <= webhook_settings.MAX_COUNTDOWN
        wait_for_rate(ids, lease, until, requeue_window(until) if soon else None)
        result.rate_waits.append((ids, until if soon else None))
    logger.info(
        "endpoint %s: %s deliveries wait for its rate limit (%s per %s s), from %s",
        endpoint.pk,
        len(waiting),
        endpoint.effective_rate_limit,
        endpoint.rate_limit_period,
        first.isoformat(),
    )
