"""Sending one delivery: claim it, sign and POST the body, record the attempt, decide what next."""

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from requests.structures import CaseInsensitiveDict

from . import breaker, signals, transport
from .metrics import observe_attempt
from .models import AttemptTrigger, Delivery, DeliveryAttempt, DeliveryStatus, Event
from .retry_policy import RetryPolicy, Verdict, parse_retry_after
from .signing import signature_headers

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
# Attempt records keep request headers for operators, but never credentials or signatures.
SENSITIVE_HEADER_WORDS = ("signature", "auth", "token", "secret", "key", "cookie", "password", "session")
# Pieces of a redacted value scrubbed on their own too (a signature entry, a bearer token);
# shorter pieces ("v1", "Bearer", a timestamp) are not secret.
MIN_SCRUBBED_PIECE = 16


def is_sensitive_header(name: str, sensitive: Iterable[str] = ()) -> bool:
    """Whether a header's value is a credential or signature: its name contains one of
    SENSITIVE_HEADER_WORDS, or is one of `sensitive` (an endpoint's sensitive_headers)."""
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_HEADER_WORDS) or lowered in {s.lower() for s in sensitive}


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


def claim(delivery_id: int, now: datetime) -> datetime | None:
    """Take the lease on a due, unclaimed pending delivery; None if it is not ours to send.

    One conditional UPDATE: of concurrent claimers exactly one matches the row.
    """
    lease = now + timedelta(seconds=lease_seconds())
    claimed = (
        Delivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .update(locked_until=lease)
    )
    return lease if claimed else None


def build_headers(delivery: Delivery, body: bytes, secrets: list[str], timestamp: int) -> CaseInsensitiveDict:
    """Custom headers first, ours after, so no custom header can replace a signature."""
    endpoint = delivery.endpoint
    headers = CaseInsensitiveDict(endpoint.headers or {})
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


def park(delivery_id: int, lease: datetime, reason: str) -> None:
    """Keep a delivery pending without a due time, spending no attempt: it waits for its
    endpoint to be enabled again or for the circuit breaker to release it."""
    Delivery.objects.filter(pk=delivery_id, locked_until=lease).update(
        next_attempt_at=None, locked_until=None, queued_until=None, updated_at=timezone.now()
    )
    logger.info("delivery %s parked: %s", delivery_id, reason)


def send_delivery(delivery_id: int, trigger: str = AttemptTrigger.AUTOMATIC) -> SendOutcome | None:
    """Make one attempt at a delivery if it is due and nobody else is sending it.

    Returns None when there was nothing to do (not due, claimed elsewhere, finished, gone).
    """
    lease = claim(delivery_id, timezone.now())
    if lease is None:
        return None
    delivery = Delivery.objects.select_related("event", "endpoint", "endpoint__client_certificate").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        # Kept, not failed: enabling the endpoint makes it due again (see receivers.py).
        park(delivery_id, lease, f"endpoint {endpoint.pk} is disabled")
        return None
    if not breaker.may_send(endpoint, timezone.now()):
        park(delivery_id, lease, f"endpoint {endpoint.pk} is paused by its circuit breaker")
        return None

    body = render_body(delivery.event)
    secrets = endpoint.live_secrets()
    headers = build_headers(delivery, body, secrets, int(time.time()))
    started_at = timezone.now()
    client_certificate = getattr(endpoint, "client_certificate", None)  # None: no mTLS
    result = transport.post(endpoint.url, body, dict(headers), client_certificate=client_certificate)
    return record_attempt(delivery, lease, trigger, started_at, headers, result, secrets=secrets)


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


def record_attempt(
    delivery: Delivery,
    lease: datetime,
    trigger: str,
    started_at: datetime,
    headers: CaseInsensitiveDict,
    result: transport.Result,
    secrets: Iterable[str] = (),
) -> SendOutcome:
    """Write the attempt and the delivery's new state in one transaction.

    Nothing secret is stored: sensitive request headers are redacted, and the signatures,
    sensitive header values and `secrets` are scrubbed from the receiver's answer.
    """
    policy = RetryPolicy.from_settings()
    sensitive = delivery.endpoint.sensitive_headers or []
    hidden = scrubbed_values(headers, sensitive, secrets)
    number = delivery.attempt_count + 1
    due_at = delivery.next_attempt_at
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

    with transaction.atomic():
        attempt = DeliveryAttempt.objects.create(
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
        updated = Delivery.objects.filter(pk=delivery.pk, locked_until=lease).update(
            status=status,
            attempt_count=number,
            next_attempt_at=next_attempt_at,
            locked_until=None,
            queued_until=queued_until,
            last_status_code=response.status if response else None,
            last_error=_clean_text(last_error)[:1000],
            updated_at=now,
        )
        if updated:
            delivery.status, delivery.attempt_count, delivery.next_attempt_at = status, number, next_attempt_at
            delivery.last_status_code = response.status if response else None
            delivery.last_error, delivery.locked_until, delivery.queued_until = last_error, None, queued_until
            _announce(delivery, attempt, status, last_error)
        else:
            logger.warning(
                "delivery %s: lease lapsed during attempt %s; state left to the new holder", delivery.pk, number
            )
        if verdict == Verdict.SUCCEEDED:
            breaker.record_success(delivery.endpoint, now)
        else:
            breaker.record_failure(delivery.endpoint, now)
        if verdict == Verdict.GONE:
            delivery.endpoint.disable(f"410 Gone on delivery {delivery.pk} at {now:%Y-%m-%d %H:%M:%S}Z")

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
    return SendOutcome(delivery.pk, verdict, number, retry_at)
