"""Sending one delivery: claim it, sign and POST the body, record the attempt, decide what next."""

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from random import SystemRandom

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from requests.structures import CaseInsensitiveDict

from endpoints.custom_headers import is_sensitive_header

from . import breaker, signals, transport
from .metrics import observe_attempt
from .models import AttemptTrigger, Delivery, DeliveryAttempt, DeliveryStatus, Event
from .retry_policy import RetryPolicy, Verdict, parse_retry_after
from .signing import signature_headers

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
# Attempt records keep request headers for operators, but never credentials or signatures
# (endpoints/custom_headers.py says which headers those are).
# Pieces of a redacted value scrubbed on their own too (a signature entry, a bearer token);
# shorter pieces ("v1", "Bearer", a timestamp) are not secret.
MIN_SCRUBBED_PIECE = 16
secrets_random = SystemRandom()


def redact_headers(headers: Mapping[str, str], sensitive: Iterable[str] = ()) -> dict[str, str]:
    """`headers` as recorded: every sensitive value replaced by [redacted]."""
    sensitive = list(sensitive)
    return {name: REDACTED if is_sensitive_header(name, sensitive) else value for name, value in headers.items()}


def scrubbed_values(
    headers: Mapping[str, str], sensitive: Iterable[str] = (), secrets: Iterable[str] = ()
) -> list[str]:
    """What must never be stored from a receiver's answer: sensitive header values, each
    signature or token in them, the signing secrets and their keys; longest first."""
    sensitive = list(sensitive)
    values = {*secrets, *(s.removeprefix("whsec_") for s in secrets)}
    for name, value in headers.items():
        if is_sensitive_header(name, sensitive):
            values.add(value)
            values.update(piece for piece in re.split(r"[\s,=]+", value) if len(piece) >= MIN_SCRUBBED_PIECE)
    return sorted((v for v in values if v), key=len, reverse=True)


def scrub(text: str, values: list[str]) -> str:
    """`text` with every one of `values` replaced by [redacted] (a receiver may echo our request
    back, e.g. a debugging endpoint or an error page)."""
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


@dataclass(frozen=True)
class SendOutcome:
    """What one call of send_delivery did; `retry_at` is set when the next try is soon enough
    to be a broker countdown (at most WEBHOOKS_MAX_COUNTDOWN away)."""

    delivery_id: int
    verdict: str
    attempt: int
    retry_at: datetime | None = None


def lease_seconds() -> float:
    """How long a claim lasts: longer than any send can take, so it only lapses if the worker died."""
    return settings.WEBHOOKS_CONNECT_TIMEOUT + settings.WEBHOOKS_REQUEST_TIMEOUT + settings.WEBHOOKS_CLAIM_MARGIN


def render_body(event: Event) -> bytes:
    """The exact bytes sent (and signed) for an event, the same on every attempt."""
    envelope = {
        "id": event.webhook_id,
        "type": event.type,
        "timestamp": event.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": event.payload,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def claim(delivery_ids: list[int], now: datetime) -> datetime | None:
    """Take the lease on those of `delivery_ids` that are due, pending and unclaimed; return the
    lease (the claimed rows are those whose `locked_until` equals it), or None if none was ours.

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


def build_headers(delivery: Delivery, body: bytes, secrets: list[str], timestamp: int) -> CaseInsensitiveDict:
    """Custom headers first, ours after, so no custom header can replace a signature."""
    endpoint = delivery.endpoint
    headers = CaseInsensitiveDict(endpoint.request_headers())
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": settings.WEBHOOKS_USER_AGENT,
            **signature_headers(endpoint.signature_scheme, secrets, delivery.event.webhook_id, timestamp, body),
        }
    )
    return headers


def _clean_text(text: str) -> str:
    return text.replace("\x00", "\ufffd")


MAX_RECORDED_HEADER_VALUE = 1000


def _capped_headers(headers: dict[str, str], hidden: list[str] = ()) -> dict[str, str]:
    """Response headers as stored: at most 100 (http.client's own limit), each value capped
    and scrubbed of `hidden` values."""
    return {
        _clean_text(k)[:200]: scrub(_clean_text(v), hidden)[:MAX_RECORDED_HEADER_VALUE]
        for k, v in list(headers.items())[:100]
    }


def park(delivery_ids: list[int], lease: datetime, reason: str) -> None:
    """Keep deliveries pending without a due time, spending no attempt: they wait for their
    endpoint to be enabled again or for the circuit breaker to release them."""
    Delivery.objects.filter(pk__in=delivery_ids, locked_until=lease).update(
        next_attempt_at=None, locked_until=None, queued_until=None, updated_at=timezone.now()
    )
    logger.info("deliveries %s parked: %s", delivery_ids, reason)


def release(delivery_ids: list[int], lease: datetime) -> None:
    """Give back claimed deliveries unsent: still due, for another task to send."""
    Delivery.objects.filter(pk__in=delivery_ids, locked_until=lease).update(locked_until=None)


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


def _send_group(group: list[Delivery], lease: datetime, trigger: str, result: BatchResult) -> None:
    """Send the claimed deliveries of one endpoint, in order, and record them."""
    endpoint = group[0].endpoint
    for delivery in group:
        delivery.endpoint = endpoint  # one instance: one breaker state, one secrets lookup
    ids = [delivery.pk for delivery in group]
    if not endpoint.is_active:
        # Kept, not failed: enabling the endpoint makes them due again (see receivers.py).
        park(ids, lease, f"endpoint {endpoint.pk} is disabled")
        return
    probing = endpoint.paused_until is not None
    if not breaker.may_send(endpoint, timezone.now()):
        park(ids, lease, f"endpoint {endpoint.pk} is paused by its circuit breaker")
        return
    if probing and len(group) > 1:
        # The breaker lets one probe through; the rest wait parked for its verdict.
        park(ids[1:], lease, f"endpoint {endpoint.pk} is being probed by its circuit breaker")
        group = group[:1]

    secrets = endpoint.live_secrets()
    client_certificate = getattr(endpoint, "client_certificate", None)  # None: no mTLS
    policy = RetryPolicy.from_settings()
    # Within the lease's margin too: the last send may take a whole request timeout after this.
    stop_at = time.monotonic() + min(settings.WEBHOOKS_SEND_BATCH_SECONDS, settings.WEBHOOKS_CLAIM_MARGIN / 2)
    made: list[_Attempt] = []
    rest: list[Delivery] = []
    for index, delivery in enumerate(group):
        body = render_body(delivery.event)
        headers = build_headers(delivery, body, secrets, int(time.time()))
        started_at = timezone.now()
        sent = transport.post(endpoint.url, body, dict(headers), client_certificate=client_certificate)
        made.append(_assess(delivery, trigger, started_at, headers, sent, secrets, policy))
        if made[-1].verdict != Verdict.SUCCEEDED or time.monotonic() > stop_at:
            rest = group[index + 1 :]
            break
    result.outcomes += _record(made, lease, trigger)
    if rest:
        release([delivery.pk for delivery in rest], lease)
        result.released += [(delivery.pk, delivery.endpoint_id) for delivery in rest]
        result.released_failing = result.released_failing or made[-1].verdict != Verdict.SUCCEEDED


def _announce(delivery: Delivery, attempt: DeliveryAttempt, status: str, reason: str) -> None:
    """Send the outcome signal once the attempt's transaction has committed."""
    if status == DeliveryStatus.SUCCEEDED:
        send = partial(signals.delivery_succeeded.send, sender=Delivery, delivery=delivery, attempt=attempt)
    elif status == DeliveryStatus.FAILED:
        send = partial(signals.delivery_failed.send, sender=Delivery, delivery=delivery, attempt=attempt, reason=reason)
    else:
        send = partial(
            signals.delivery_retrying.send,
            sender=Delivery,
            delivery=delivery,
            attempt=attempt,
            next_attempt_at=delivery.next_attempt_at,
        )
    transaction.on_commit(send)


@dataclass
class _Attempt:
    """One attempt made, assessed, not yet written."""

    delivery: Delivery
    row: DeliveryAttempt
    verdict: str
    status: str
    changes: dict  # the Delivery's new field values
    retry_at: datetime | None
    started_at: datetime
    due_at: datetime | None  # when the attempt was due (its lateness is a metric)
    result: transport.Result


def _assess(
    delivery: Delivery,
    trigger: str,
    started_at: datetime,
    headers: CaseInsensitiveDict,
    result: transport.Result,
    secrets: Iterable[str],
    policy: RetryPolicy,
) -> _Attempt:
    """The verdict on one attempt, its row and the delivery's new state.

    Nothing secret is kept: sensitive request headers are redacted, and the signatures,
    sensitive header values and `secrets` are scrubbed from the receiver's answer.
    """
    sensitive = delivery.endpoint.sensitive_headers or []
    hidden = scrubbed_values(headers, sensitive, secrets)
    number = delivery.attempt_count + 1
    response = result.response
    now = timezone.now()
    retry_after = None
    if response is not None:
        verdict = policy.classify(response.status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
        last_error = "" if verdict == Verdict.SUCCEEDED else f"HTTP {response.status}"
    else:
        error = result.error
        verdict = Verdict.FAILED if error.error_class in transport.NOT_RETRYABLE_ERRORS else Verdict.RETRY
        last_error = f"{error.error_class}: {error.message}"

    next_attempt_at = queued_until = retry_at = None
    if verdict == Verdict.RETRY:
        delay = policy.delay_after(number, retry_after)
        if delay is None:
            verdict = Verdict.FAILED
            last_error = f"{last_error} (gave up after {number} attempts)"
        else:
            next_attempt_at = now + timedelta(seconds=delay)
            if delay <= settings.WEBHOOKS_MAX_COUNTDOWN:
                retry_at = next_attempt_at
                queued_until = next_attempt_at + timedelta(seconds=settings.WEBHOOKS_REQUEUE_AFTER)
    status = {
        Verdict.SUCCEEDED: DeliveryStatus.SUCCEEDED,
        Verdict.RETRY: DeliveryStatus.PENDING,
    }.get(verdict, DeliveryStatus.FAILED)
    row = DeliveryAttempt(
        delivery=delivery,
        number=number,
        trigger=trigger,
        started_at=started_at,
        duration_ms=result.duration_ms,
        request_headers=redact_headers(headers, sensitive),
        response_status=response.status if response else None,
        response_headers=_capped_headers(response.headers, hidden) if response else {},
        response_body=scrub(_clean_text(response.body.decode("utf-8", "replace")), hidden) if response else "",
        error_class=result.error.error_class if result.error else "",
        error_message=scrub(_clean_text(result.error.message), hidden) if result.error else "",
        outcome=verdict,
    )
    changes = {
        "status": status,
        "attempt_count": number,
        "next_attempt_at": next_attempt_at,
        "locked_until": None,
        "queued_until": queued_until,
        "last_status_code": response.status if response else None,
        "last_error": _clean_text(last_error)[:1000],
    }
    return _Attempt(delivery, row, verdict, status, changes, retry_at, started_at, delivery.next_attempt_at, result)


def _record(made: list[_Attempt], lease: datetime, trigger: str) -> list[SendOutcome]:
    """Write attempts of one endpoint and their deliveries' new states in one transaction:
    one INSERT for the attempts, one UPDATE per distinct new state (a batch of successes
    shares one), and the circuit breaker's count. A delivery whose lease lapsed meanwhile
    (another holder took it) keeps its attempt row but not our state."""
    if not made:
        return []
    endpoint = made[0].delivery.endpoint
    now = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create([attempt.row for attempt in made])
        ids = [attempt.delivery.pk for attempt in made]
        if len(made) > 1:
            held = set(
                Delivery.objects.select_for_update().filter(pk__in=ids, locked_until=lease).values_list("pk", flat=True)
            )
        else:
            held = set(ids)
        same: dict[tuple, list[int]] = {}
        for attempt in made:
            if attempt.delivery.pk in held:
                same.setdefault(tuple(attempt.changes.items()), []).append(attempt.delivery.pk)
        for changes, delivery_ids in same.items():
            updated = Delivery.objects.filter(pk__in=delivery_ids, locked_until=lease).update(
                **dict(changes), updated_at=now
            )
            if len(made) == 1 and not updated:
                held = set()
        for attempt in made:
            delivery = attempt.delivery
            if delivery.pk in held:
                for name, value in attempt.changes.items():
                    setattr(delivery, name, value)
                _announce(delivery, attempt.row, attempt.status, attempt.changes["last_error"])
            else:
                logger.warning(
                    "delivery %s: lease lapsed during attempt %s; state left to the new holder",
                    delivery.pk,
                    attempt.row.number,
                )
        failures = sum(attempt.verdict != Verdict.SUCCEEDED for attempt in made)
        if failures < len(made):
            breaker.record_success(endpoint, now)
        if failures:
            breaker.record_failure(endpoint, now, count=failures)
        if any(attempt.verdict == Verdict.GONE for attempt in made):
            gone = next(attempt.delivery.pk for attempt in made if attempt.verdict == Verdict.GONE)
            endpoint.disable(f"410 Gone on delivery {gone} at {now:%Y-%m-%d %H:%M:%S}Z")
    return [_observe(attempt, trigger) for attempt in made]


def _observe(made: _Attempt, trigger: str) -> SendOutcome:
    """Metrics and the log line of one recorded attempt."""
    delivery, verdict, result, started_at = made.delivery, made.verdict, made.result, made.started_at
    response, number, due_at = result.response, made.row.number, made.due_at
    # Lateness means nothing for an operator's retry or a replay.
    lag = (started_at - due_at).total_seconds() if trigger == AttemptTrigger.AUTOMATIC and due_at else None
    observe_attempt(verdict, result.duration_ms / 1000, lag)
    logger.info(
        "webhook attempt event=%s delivery=%s endpoint=%s attempt=%s outcome=%s status=%s duration_ms=%s error=%s",
        delivery.event.webhook_id,
        delivery.pk,
        delivery.endpoint_id,
        number,
        verdict,
        response.status if response else "-",
        result.duration_ms,
        result.error.error_class if result.error else "-",
    )
    return SendOutcome(delivery.pk, verdict, number, made.retry_at)
