"""What a send leaves behind, and writing it: each attempt's row (request headers redacted, the
receiver's answer scrubbed), its delivery's new state, the circuit breaker's count, the outcome
signals, the metrics and the log line.

The record is written after the requests, from what they returned, kept in memory. The sender's
database connection sat idle meanwhile, for up to a batch's time budget, and the server may
have dropped it (a restart, a failover, a pooler's idle timeout): record_attempts writes on a
new connection then, and never sends anything again. Measured before this (issue 11): killing a
worker's sessions during a 240-delivery burst re-sent 160 webhooks after their lease, with no
attempt row for their first send.
"""

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Max
from django.utils import timezone
from requests.structures import CaseInsensitiveDict

from endpoints import rate_adaptation

from . import breaker, ordering, scheduling, signals, transport
from .metrics import observe_attempt
from .models import AttemptTrigger, Delivery, DeliveryAttempt, DeliveryStatus
from .redaction import capped_headers, clean_text, redact_headers, scrub, scrubbed_values
from .retry_policy import RetryPolicy, Verdict, parse_retry_after

__all__ = ["RECORD_RETRY_DELAYS", "AssessedAttempt", "SendOutcome", "assess", "record_attempts"]

logger = logging.getLogger(__name__)

RECORD_RETRY_DELAYS = (0.0, 0.5, 1.0, 2.0, 4.0)
"""Seconds before each new try at writing a record after the database connection failed, each
on a new connection. The first is immediate: a connection the server dropped while it sat idle
is the usual case, and a new one works at once. The others ride out a restart or a failover
(7.5 s in all), far inside a lease (connect and request timeouts plus a 60 s margin); no try
starts once the lease would have run out, since the sweep then hands the deliveries on."""


@dataclass(frozen=True)
class SendOutcome:
    """What one attempt did; `retry_at` is set when the next try is soon enough to be a broker
    countdown (at most WEBHOOKS_MAX_COUNTDOWN away)."""

    delivery_id: int
    verdict: str
    attempt: int
    retry_at: datetime | None = None


@dataclass
class AssessedAttempt:
    """One attempt made and assessed, held in memory until it is written."""

    delivery: Delivery
    row: DeliveryAttempt
    verdict: str
    status: str
    changes: dict  # the Delivery's new field values
    retry_at: datetime | None
    started_at: datetime
    due_at: datetime | None  # when the attempt was due (its lateness is a metric)
    result: transport.Result


def assess(
    delivery: Delivery,
    trigger: str,
    started_at: datetime,
    headers: CaseInsensitiveDict,
    body: bytes,
    result: transport.Result,
    secrets: Iterable[str],
    policy: RetryPolicy,
) -> AssessedAttempt:
    """The verdict on one attempt, its row and the delivery's new state.

    Nothing secret is kept: sensitive request headers are redacted, and the signatures,
    sensitive header values and `secrets` are scrubbed from the receiver's answer. Of the
    `body` sent, the row keeps the SHA-256 (the event holds the text).
    """
    endpoint = delivery.endpoint
    # A signature header named freely (X-Shopify-Hmac-Sha256 does not say "signature") is
    # never recorded either: with a body_hmac signature, anyone reading it could replay the body.
    sensitive = [
        *(endpoint.sensitive_headers or []),
        *([endpoint.signature_header] if endpoint.signature_header else []),
    ]
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

    delay = None
    if verdict == Verdict.RETRY:
        delay = policy.delay_after(number, retry_after)
        if delay is None:
            verdict = Verdict.FAILED
            last_error = f"{last_error} (gave up after {number} attempts)"
    status = {
        Verdict.SUCCEEDED: DeliveryStatus.SUCCEEDED,
        Verdict.RETRY: DeliveryStatus.PENDING,
    }.get(verdict, DeliveryStatus.FAILED)
    state = scheduling.after_attempt(status, now, delay)
    # A countdown message for a soon retry (its queued_until is set); a later one waits for the sweep.
    retry_at = state.next_attempt_at if state.queued_until is not None else None
    row = DeliveryAttempt(
        delivery=delivery,
        number=number,
        trigger=trigger,
        started_at=started_at,
        duration_ms=result.duration_ms,
        request_headers=redact_headers(headers, sensitive),
        response_status=response.status if response else None,
        response_headers=capped_headers(response.headers, hidden) if response else {},
        response_body=scrub(clean_text(response.body.decode("utf-8", "replace")), hidden) if response else "",
        error_class=result.error.error_class if result.error else "",
        error_message=scrub(clean_text(result.error.message), hidden) if result.error else "",
        outcome=verdict,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
    changes = {
        **state.fields(),
        "attempt_count": number,
        "last_status_code": response.status if response else None,
        "last_error": clean_text(last_error)[:1000],
    }
    return AssessedAttempt(
        delivery, row, verdict, status, changes, retry_at, started_at, delivery.next_attempt_at, result
    )


def record_attempts(made: list[AssessedAttempt], lease: datetime, trigger: str) -> list[SendOutcome]:
    """Write the attempts of one endpoint and their deliveries' new states in one transaction
    (see _write), then announce the outcomes and return them.

    When the database connection fails, the write is tried again on a new connection after
    each of RECORD_RETRY_DELAYS, from the attempts held in memory: the requests were made and
    are never made again here. A try that finds the attempts already written (the COMMIT of an
    earlier try took effect, but its answer was lost with the connection) writes nothing
    more. If every try fails, or the lease would run out first, the error is logged and raised:
    the deliveries stay leased, unrecorded, and the sweep sends them again once the lease has
    expired (at-least-once).
    """
    if not made:
        return []
    held: set[int] | None = None  # the deliveries whose state is ours, once recorded
    failure: OperationalError | InterfaceError | None = None
    for delay in (None, *RECORD_RETRY_DELAYS):
        if failure is not None:
            if connection.in_atomic_block or timezone.now() + timedelta(seconds=delay) >= lease:
                break  # a caller's transaction cannot go on; or the sweep is about to take over
            time.sleep(delay)
        try:
            held = _already_recorded(made) if failure is not None else None
            if held is None:
                held = _write_numbered(made, lease)
        except (OperationalError, InterfaceError) as error:
            failure = error
            if not connection.in_atomic_block:
                connection.close()  # the next query opens a new connection
            continue
        break
    if held is None:
        ids = [attempt.delivery.pk for attempt in made]
        logger.error(
            "could not record %s attempts (deliveries %s) of endpoint %s: %s; they stay leased until %s, "
            "then the sweep sends them again",
            len(made),
            ids,
            made[0].delivery.endpoint_id,
            failure,
            lease.isoformat(),
        )
        raise failure
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
    return [_observe(attempt, trigger) for attempt in made]


def _write_numbered(made: list[AssessedAttempt], lease: datetime) -> set[int]:
    """_write, once more with the attempts renumbered if their numbers are taken.

    A number is taken only when a sender whose lease lapsed (a process frozen past it) recorded
    its late attempt after this sender claimed the delivery with the same attempt count. Without
    renumbering, every later sender would collide with that row too: the delivery would be sent
    again at each lease, forever, never recorded. The unique constraint finds it, at no cost to
    the usual write.
    """
    try:
        return _write(made, lease)
    except IntegrityError:
        taken = dict(
            DeliveryAttempt.objects.filter(delivery_id__in=[attempt.delivery.pk for attempt in made])
            .values("delivery_id")
            .annotate(last=Max("number"))
            .values_list("delivery_id", "last")
        )
        renumbered = False
        for attempt in made:
            last = taken.get(attempt.delivery.pk)
            if last is not None and last >= attempt.row.number:
                attempt.row.number = attempt.changes["attempt_count"] = last + 1
                renumbered = True
        if not renumbered:
            raise
        logger.warning("attempt numbers taken by a lapsed sender's late record; recorded after them")
        return _write(made, lease)


def _write(made: list[AssessedAttempt], lease: datetime) -> set[int]:
    """One transaction: one INSERT for the attempts, one UPDATE per distinct new state (a batch
    of successes shares one), the circuit breaker's count, and after a 429 from an endpoint with
    a rate limit, one UPDATE lowering it (endpoints/rate_adaptation.py). Returns the deliveries
    whose state was ours to set: a delivery whose lease lapsed meanwhile (another holder took it)
    keeps its attempt row but not our state."""
    endpoint = made[0].delivery.endpoint
    now = timezone.now()
    for attempt in made:  # an earlier try's INSERT may have set ids that its rollback undid
        attempt.row.pk, attempt.row._state.adding = None, True
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
            updated = scheduling.settle(delivery_ids, lease, dict(changes), now)
            if len(made) == 1 and not updated:
                held = set()
        ordering.advance(ordering.finished_chains((a.delivery, a.status) for a in made if a.delivery.pk in held))
        failures = sum(attempt.verdict != Verdict.SUCCEEDED for attempt in made)
        if failures < len(made):
            breaker.record_success(endpoint, now)
        if failures:
            breaker.record_failure(endpoint, now, count=failures)
        if endpoint.rate_limit is not None and any(attempt.row.response_status == 429 for attempt in made):
            rate_adaptation.lower_after_429(endpoint)
        if any(attempt.verdict == Verdict.GONE for attempt in made):
            gone = next(attempt.delivery.pk for attempt in made if attempt.verdict == Verdict.GONE)
            endpoint.disable(f"410 Gone on delivery {gone} at {now:%Y-%m-%d %H:%M:%S}Z")
    return held


def _already_recorded(made: list[AssessedAttempt]) -> set[int] | None:
    """After a failed try: None if that try wrote nothing (the usual case: the connection was
    dead before the first statement, or the server rolled the transaction back); else the
    deliveries whose state it set.

    Why this is safe: _write is one transaction, so its rows are all there or none is. An
    attempt row is ours if its (delivery, number) and its start time, to the microsecond, are
    this attempt's: another sender's attempt of that number (after a lapsed lease) has its own
    start time. The state was ours to set if the delivery's attempt count reached our number
    (_write's UPDATE only applies while the lease is still ours, and sets it). A record found
    gets its rows' ids back, for the signals; the endpoint_disabled signal of a 410 is the one
    thing such a lost answer costs.
    """
    ours = {(attempt.delivery.pk, attempt.row.number): attempt for attempt in made}
    found = DeliveryAttempt.objects.filter(
        delivery_id__in=[key[0] for key in ours], number__in={key[1] for key in ours}
    ).values_list("delivery_id", "number", "started_at", "pk")
    recorded: dict[tuple[int, int], int] = {}
    for delivery_id, number, started_at, pk in found:
        attempt = ours.get((delivery_id, number))
        if attempt is not None and attempt.started_at == started_at:
            recorded[delivery_id, number] = pk
    if not recorded:
        return None
    for key, pk in recorded.items():
        row = ours[key].row
        row.pk, row._state.adding, row._state.db = pk, False, connection.alias
    counts = dict(Delivery.objects.filter(pk__in=[key[0] for key in ours]).values_list("pk", "attempt_count"))
    return {pk for pk, number in ours if counts.get(pk, 0) >= number}


def _announce(delivery: Delivery, attempt: DeliveryAttempt, status: str, reason: str) -> None:
    """Send the outcome signal once the attempt is committed (at once, outside a transaction)."""
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


def _observe(made: AssessedAttempt, trigger: str) -> SendOutcome:
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
