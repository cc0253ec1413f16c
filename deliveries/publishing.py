"""`publish()` and `publish_many()`: how host code hands events to the webhook pipeline.

The payload is serialized once, here, and that text is stored (`Event.payload_json`) and sent as
the body's `data`, byte for byte: the publisher's key order and number forms reach the receiver.
It used to be re-serialized from the `jsonb` column, which keeps neither: measured on real
deliveries, 58 of 122 requests had their `data` keys in another order than published, and
`1e16` arrived as `10000000000000000`, `6.02e23` as a 24-digit integer.
"""

import json
import logging
import reprlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Q

from endpoints.app_settings import webhook_settings
from endpoints.event_types import event_type_error
from endpoints.validation import is_encodable

from .catalog import catalog_error
from .metrics import observe_published
from .models import Event

logger = logging.getLogger(__name__)

MAX_TENANT_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 200
MAX_ORDERING_KEY_LENGTH = 200
# Rows per INSERT in publish_many: 500 events of a few kB make a statement of a few MB, and
# 3,500 parameters, far below PostgreSQL's limit of 65,535.
BULK_BATCH_SIZE = 500


class PublishError(ValueError):
    """The event cannot be published as given; nothing was written."""


class IdempotencyConflict(PublishError):
    """The idempotency key was already used for a different event type or payload."""


MAX_PAYLOAD_DEPTH = 64
_CONTAINERS = (dict, list, tuple)


def payload_structure_error(data: Any, max_values: int) -> str | None:
    """Why the shape of `data` cannot make a payload, or None: a key that is not a string
    (JSON would convert it, and `{1: "x", "1": "y"}` would silently lose a value), nesting
    deeper than MAX_PAYLOAD_DEPTH, or more values than `max_values`.

    Each value takes at least one byte of JSON, so a payload of more values than the byte limit
    is over it: counting them bounds this walk (and refuses, before json.dumps would write them
    out, lists that share their items 2**40 times). It visits each container once per place
    it appears, without recursion, and costs less than the serialization it precedes.
    """
    stack: list[tuple[Any, int, tuple | None]] = [(data, 1, None)]
    values = 0
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            # PostgreSQL refuses deep JSON documents (stack depth) long before Python does.
            return f"payload is nested too deeply to serialize (more than {MAX_PAYLOAD_DEPTH} levels)"
        values += len(value)
        if values > max_values:
            return f"payload holds more than {max_values} values; the limit is {max_values} bytes serialized"
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    return _key_error(key, path)
                if isinstance(child, _CONTAINERS):
                    stack.append((child, depth + 1, (path, key)))
        else:
            for index, child in enumerate(value):
                if isinstance(child, _CONTAINERS):
                    stack.append((child, depth + 1, (path, index)))
    return None


def _key_error(key: object, path: tuple | None) -> str:
    if key is None:
        kind = "None"
    else:
        name = type(key).__name__
        kind = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    message = f"payload key {_short_repr(key)} at {_path_text(path)} is {kind}; keys must be strings"
    if key is None or isinstance(key, float) or (isinstance(key, int) and abs(key) < 10**18):
        message += f" (JSON would turn it into {json.dumps(key)!r})"
    return message


def _short_repr(value: object) -> str:
    """A short text of `value` for an error message, even if it has no usable repr (an int
    of 5,000 digits has none)."""
    try:
        return reprlib.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _path_text(path: tuple | None) -> str:
    """`data.items[0]['a b']` for the linked path (((None, "items"), 0), "a b")."""
    steps: list[str] = []
    while path is not None:
        path, step = path
        if isinstance(step, int):
            steps.append(f"[{step}]")
        elif step.isidentifier() and len(step) <= 40:
            steps.append(f".{step}")
        else:
            steps.append(f"[{_short_repr(step)}]")
    return "data" + "".join(reversed(steps))


def serialize_payload(data: Any) -> str:
    """The payload as JSON text, or PublishError saying why it cannot be one.

    Dates, times, decimals and UUIDs are written as Django's JSON encoder writes them; NaN and
    Infinity are refused (they are not JSON), and so is NUL (PostgreSQL cannot store it), and
    any key that is not a string (`payload_structure_error`).
    """
    if not isinstance(data, dict):
        raise PublishError(f"payload must be a JSON object (a dict), not {type(data).__name__}")
    limit = webhook_settings.MAX_PAYLOAD_BYTES
    error = payload_structure_error(data, limit)
    if error:
        raise PublishError(error)
    try:
        text = json.dumps(data, cls=DjangoJSONEncoder, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except RecursionError:
        raise PublishError("payload is nested too deeply to serialize") from None
    except (TypeError, ValueError) as exc:
        raise PublishError(f"payload is not JSON-serializable: {exc}") from None
    if "\\u0000" in text:
        raise PublishError("payload must not contain NUL characters (\\u0000)")
    if size > limit:
        raise PublishError(f"payload is {size} bytes serialized; the limit is {limit} bytes")
    return text


@dataclass(frozen=True)
class Payload:
    """A validated payload: `text` exactly as it is stored and sent (the `data` of every body,
    byte for byte) and `value`, the same parsed into plain JSON values (what the catalog's
    schema checks and the `jsonb` column holds)."""

    text: str
    value: dict


def validated_payload(event_type: str, data: Any) -> Payload:
    """The payload as it will be stored and sent, or PublishError.

    Checks that it serializes (`serialize_payload`) and, when WEBHOOKS_EVENT_TYPES lists
    anything, that the type is listed and the payload matches its schema.
    """
    text = serialize_payload(data)
    payload = Payload(text, json.loads(text))
    error = catalog_error(event_type, payload.value)
    if error:
        raise PublishError(error)
    return payload


def same_payload(event: Event, payload: Payload) -> bool:
    """Whether `event` holds the same payload, for an idempotency key used again: the same JSON
    value, whatever the order of its keys, numbers compared by value (`1e16` and
    `10000000000000000` are equal; the event keeps the text it was first published with).

    Compared from the stored text, parsed as `payload.value` was: `jsonb` would give
    `6.02e23` back as the integer 602000000000000000000000, which is not the float, and a
    repeated publish would be refused as a conflict. Rows without the text (written before
    migration 0004, or with `payload` only) are compared by their `jsonb` value, as before.
    """
    if event.payload_json is None:
        return event.payload == payload.value
    return event.payload_json == payload.text or json.loads(event.payload_json) == payload.value


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
        if not is_encodable(value):
            raise PublishError("tenant and idempotency_key must be valid Unicode text (no lone surrogates)")


def ordering_key_error(ordering_key: object) -> str | None:
    """Why `ordering_key` cannot be one, or None. It is sent in a header (Webhook-Ordering-Key),
    so it is printable ASCII: 1 to 200 characters from space to tilde."""
    if ordering_key is None:
        return None
    if (
        not isinstance(ordering_key, str)
        or not 0 < len(ordering_key) <= MAX_ORDERING_KEY_LENGTH
        or not all(" " <= char <= "~" for char in ordering_key)
    ):
        return (
            f"ordering_key must be a string of 1 to {MAX_ORDERING_KEY_LENGTH} printable ASCII characters, "
            f"got {reprlib.repr(ordering_key)}"
        )
    return None


def _existing(event_type: str, payload: Payload, tenant: str, idempotency_key: str) -> Event | None:
    event = Event.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if event is not None and (event.type != event_type or not same_payload(event, payload)):
        raise IdempotencyConflict(
            f"idempotency key {idempotency_key!r} was already used for a different event "
            f"({event.type} {event.webhook_id}); use a new key for a new event"
        )
    return event


def publish(
    event_type: str,
    data: dict,
    *,
    tenant: str = "",
    idempotency_key: str | None = None,
    ordering_key: str | None = None,
) -> Event:
    """Record an event and send it to every subscribed endpoint of `tenant` after commit.

    Call it inside the transaction that makes the change: the Event row is written there and
    fan-out is enqueued only when it commits, so a rolled-back transaction sends nothing.
    Publishing again with the same `idempotency_key` (per tenant) returns the first event and
    sends nothing new; reusing a key for a different type or payload raises
    IdempotencyConflict (the same payload means the same JSON value: see `same_payload`).
    Invalid input raises PublishError (a ValueError) and writes nothing;
    so does a type missing from WEBHOOKS_EVENT_TYPES, or a payload its schema rejects, when
    that catalog is configured.

    Events of one tenant with the same `ordering_key` reach each endpoint in the order they were
    published: one is not sent before the previous one to that endpoint has succeeded, failed
    for good or been cancelled (deliveries.ordering); other keys are not held up.
    """
    _validate(event_type, tenant, idempotency_key)
    if error := ordering_key_error(ordering_key):
        raise PublishError(error)
    payload = validated_payload(event_type, data)
    if idempotency_key is not None:
        existing = _existing(event_type, payload, tenant, idempotency_key)
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            event = Event.objects.create(
                type=event_type,
                payload=payload.value,
                payload_json=payload.text,
                tenant=tenant,
                idempotency_key=idempotency_key,
                ordering_key=ordering_key,
            )
    except IntegrityError:
        # A concurrent publish with the same key committed first.
        existing = _existing(event_type, payload, tenant, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return existing
    transaction.on_commit(lambda: _enqueue_fan_outs([str(event.id)]))
    return event


EVENT_KEYS = frozenset({"type", "data", "tenant", "idempotency_key", "ordering_key"})


@dataclass
class _Item:
    type: str
    payload: Payload
    tenant: str
    idempotency_key: str | None
    ordering_key: str | None = None


def publish_many(events: Iterable[tuple[str, dict] | Mapping[str, Any]], *, tenant: str = "") -> list[Event]:
    """Record many events at once and send each to the subscribed endpoints after commit.

    Each item is a `(type, data)` tuple or a dict `{"type", "data"}` with the optional keys
    `tenant` (default: the `tenant` argument), `idempotency_key` and `ordering_key` (events of
    one key are sent in input order, see `publish()`). Everything is validated
    first, as `publish()` validates one event: any invalid item raises PublishError naming its
    index (`events[3]: ...`) and nothing is written. The rows are then written with bulk
    INSERTs in the caller's transaction, and ONE on-commit callback enqueues the fan-out of
    all of them over one broker connection; a rolled-back transaction sends nothing. Returns
    the events in input order.

    Idempotency keys behave as in `publish()`, item by item: a key already used for the same
    type and payload returns that existing event (sent once, not again) while the other items
    are created; a key already used for a different event raises IdempotencyConflict naming
    the item, and nothing is written. An item repeating a key earlier in the same call returns
    the same Event.

    Django sends no `post_save` for `bulk_create()` nor for a queryset's `update()`, so model
    hooks cannot see those writes: call `publish_many()` next to them.
    """
    items = []
    for index, spec in enumerate(events):
        try:
            items.append(_item(spec, tenant))
        except PublishError as exc:
            raise type(exc)(f"events[{index}]: {exc}") from None
    if not items:
        return []
    keyed = any(item.idempotency_key is not None for item in items)
    for attempt in range(3):
        results, new = _plan(items, _existing_by_key(items) if keyed else {})
        try:
            with transaction.atomic():
                Event.objects.bulk_create(new, batch_size=BULK_BATCH_SIZE)
            break
        except IntegrityError:
            # A concurrent publish committed one of these keys first: look the keys up again.
            if not keyed or attempt == 2:
                raise
    if new:
        event_ids = [str(event.id) for event in new]
        transaction.on_commit(lambda: _enqueue_fan_outs(event_ids))
    return results


def _item(spec: object, tenant: str) -> _Item:
    """One item of publish_many, validated, or PublishError."""
    idempotency_key = ordering_key = None
    if isinstance(spec, Mapping):
        unknown = set(spec) - EVENT_KEYS
        if unknown or "type" not in spec or "data" not in spec:
            raise PublishError(
                "an event given as a dict needs the keys 'type' and 'data' (optional: 'tenant', "
                f"'idempotency_key', 'ordering_key'); got {sorted(map(str, spec))}"
            )
        event_type, data = spec["type"], spec["data"]
        tenant = spec.get("tenant", tenant)
        idempotency_key = spec.get("idempotency_key")
        ordering_key = spec.get("ordering_key")
    elif isinstance(spec, tuple) and len(spec) == 2:
        event_type, data = spec
    else:
        raise PublishError(f"an event is a (type, data) tuple or a dict, not {type(spec).__name__}")
    _validate(event_type, tenant, idempotency_key)
    if error := ordering_key_error(ordering_key):
        raise PublishError(error)
    return _Item(event_type, validated_payload(event_type, data), tenant, idempotency_key, ordering_key)


def _existing_by_key(items: list[_Item]) -> dict[tuple[str, str], Event]:
    """Events already holding the items' idempotency keys, by (tenant, key): one query."""
    keys_by_tenant: dict[str, set[str]] = {}
    for item in items:
        if item.idempotency_key is not None:
            keys_by_tenant.setdefault(item.tenant, set()).add(item.idempotency_key)
    query = Q()
    for item_tenant, keys in keys_by_tenant.items():
        query |= Q(tenant=item_tenant, idempotency_key__in=keys)
    return {(event.tenant, event.idempotency_key): event for event in Event.objects.filter(query)}


def _plan(items: list[_Item], existing: dict[tuple[str, str], Event]) -> tuple[list[Event], list[Event]]:
    """The event for each item (existing or new, in input order) and the new ones to insert."""
    results: list[Event] = []
    new: list[Event] = []
    by_key = dict(existing)
    for index, item in enumerate(items):
        key = (item.tenant, item.idempotency_key)
        event = by_key.get(key) if item.idempotency_key is not None else None
        if event is not None:
            if event.type != item.type or not same_payload(event, item.payload):
                raise IdempotencyConflict(
                    f"events[{index}]: idempotency key {item.idempotency_key!r} was already used for a "
                    f"different event ({event.type} {event.webhook_id}); use a new key for a new event"
                )
        else:
            event = Event(
                type=item.type,
                payload=item.payload.value,
                payload_json=item.payload.text,
                tenant=item.tenant,
                idempotency_key=item.idempotency_key,
                ordering_key=item.ordering_key,
            )
            new.append(event)
            if item.idempotency_key is not None:
                by_key[key] = event
        results.append(event)
    # Ids that sort in input order: events of one call can share a created_at, and (created_at,
    # id) is the order in which the events of one ordering key are sent (deliveries.ordering).
    for event, pk in zip(new, sorted(uuid.uuid4() for _ in new), strict=True):
        event.id = pk
    return results, new


def _enqueue_fan_outs(event_ids: list[str]) -> None:
    """Enqueue the fan-out of committed events over one broker connection: one message for
    one event, one per WEBHOOKS_FANOUT_BATCH_SIZE events for more."""
    from .tasks import fan_out_task

    observe_published(len(event_ids))
    sent = 0
    size = webhook_settings.FANOUT_BATCH_SIZE
    try:
        with fan_out_task.app.producer_or_acquire() as producer:
            for start in range(0, len(event_ids), size):
                batch = event_ids[start : start + size]
                fan_out_task.apply_async((batch[0] if len(batch) == 1 else batch,), producer=producer)
                sent += len(batch)
    except Exception:
        # The events are committed; the sweep fans out events that were never fanned out.
        logger.exception(
            "could not enqueue fan-out of %s of %s events; the sweep will pick them up",
            len(event_ids) - sent,
            len(event_ids),
        )
