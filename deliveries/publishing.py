"""`publish()`: how host code hands an event to the webhook pipeline."""

import json
import logging
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction

from endpoints.event_types import event_type_error

from .metrics import observe_published
from .models import Event

logger = logging.getLogger(__name__)

MAX_TENANT_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 200


class PublishError(ValueError):
    """The event cannot be published as given; nothing was written."""


class IdempotencyConflict(PublishError):
    """The idempotency key was already used for a different event type or payload."""


def serialize_payload(data: Any) -> str:
    """The payload as JSON text, or PublishError saying why it cannot be one.

    Dates, times, decimals and UUIDs are written as Django's JSON encoder writes them; NaN and
    Infinity are refused (they are not JSON), and so is NUL (PostgreSQL cannot store it).
    """
    if not isinstance(data, dict):
        raise PublishError(f"payload must be a JSON object (a dict), not {type(data).__name__}")
    try:
        text = json.dumps(data, cls=DjangoJSONEncoder, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except RecursionError:
        raise PublishError("payload is nested too deeply to serialize") from None
    except (TypeError, ValueError) as exc:
        raise PublishError(f"payload is not JSON-serializable: {exc}") from None
    if "\\u0000" in text:
        raise PublishError("payload must not contain NUL characters (\\u0000)")
    limit = settings.WEBHOOKS_MAX_PAYLOAD_BYTES
    if size > limit:
        raise PublishError(f"payload is {size} bytes serialized; the limit is {limit} bytes")
    return text


def _validate(event_type: str, tenant: str, idempotency_key: str | None) -> None:
    error = event_type_error(event_type)
    if error:
        raise PublishError(error)
    if not isinstance(tenant, str) or len(tenant) > MAX_TENANT_LENGTH:
        raise PublishError(f"tenant must be a string of at most {MAX_TENANT_LENGTH} characters")
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
    ):
        raise PublishError(
            f"idempotency_key must be a non-empty string of at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    for value in (tenant, idempotency_key or ""):
        if "\x00" in value:
            raise PublishError("tenant and idempotency_key must not contain NUL characters")


def _existing(event_type: str, payload: dict, tenant: str, idempotency_key: str) -> Event | None:
    event = Event.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if event is not None and (event.type != event_type or event.payload != payload):
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was already used for a different event "
            f"({event.type} {event.webhook_id}); use a new key for a new event"
        )
    return event


def publish(event_type: str, data: dict, *, tenant: str = "", idempotency_key: str | None = None) -> Event:
    """Record an event and send it to every subscribed endpoint of `tenant` after commit.

    Call it inside the transaction that makes the change: the Event row is written there and
    fan-out is enqueued only when it commits, so a rolled-back transaction sends nothing.
    Publishing again with the same `idempotency_key` (per tenant) returns the first event and
    sends nothing new; reusing a key for a different type or payload raises
    IdempotencyConflict. Invalid input raises PublishError (a ValueError) and writes nothing.
    """
    _validate(event_type, tenant, idempotency_key)
    payload = json.loads(serialize_payload(data))
    if idempotency_key is not None:
        existing = _existing(event_type, payload, tenant, idempotency_key)
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            event = Event.objects.create(
                type=event_type, payload=payload, tenant=tenant, idempotency_key=idempotency_key
            )
    except IntegrityError:
        # A concurrent publish with the same key committed first.
        existing = _existing(event_type, payload, tenant, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return existing
    transaction.on_commit(lambda: _enqueue_fan_out(event))
    return event


def _enqueue_fan_out(event: Event) -> None:
    from .tasks import fan_out_task

    observe_published()
    try:
        fan_out_task.apply_async((str(event.id),))
    except Exception:
        # The event is committed; the sweep fans out events that were never fanned out.
        logger.exception("could not enqueue fan-out of event %s; the sweep will pick it up", event.webhook_id)
