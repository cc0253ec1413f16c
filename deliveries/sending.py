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
from datetime import datetime

from django.utils import timezone
from requests.structures import CaseInsensitiveDict

from endpoints.app_settings import webhook_settings

from . import breaker, transport
from .attempt_records import AssessedAttempt, SendOutcome, assess, record_attempts
from .models import AttemptTrigger, Delivery, Event, ParkedReason
from .retry_policy import RetryPolicy, Verdict
from .scheduling import claim, park, release
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

    secrets = endpoint.live_secrets()
    client_certificate = getattr(endpoint, "client_certificate", None)  # None: no mTLS
    policy = RetryPolicy.from_settings()
    # Within the lease's margin too: the last send may take a whole request timeout after this.
    stop_at = time.monotonic() + min(webhook_settings.SEND_BATCH_SECONDS, webhook_settings.CLAIM_MARGIN / 2)
    made: list[AssessedAttempt] = []
    rest: list[Delivery] = []
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
            rest = group[index + 1 :]
            break
    result.outcomes += record_attempts(made, lease, trigger)
    if rest:
        release([delivery.pk for delivery in rest], lease)
        result.released += [(delivery.pk, delivery.endpoint_id) for delivery in rest]
        result.released_failing = result.released_failing or made[-1].verdict != Verdict.SUCCEEDED
