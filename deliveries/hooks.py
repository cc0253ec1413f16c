"""Model hooks: saves and deletes of host models published as webhook events.

Configured in settings,

    WEBHOOKS_MODEL_HOOKS = {
        "shop.Order": {
            "events": {"created": "order.created", "updated": "order.updated", "deleted": "order.deleted"},
            "serializer": "shop.webhooks.order_payload",  # optional: (instance) -> dict
            "filter": "shop.webhooks.is_visible",  # optional: (instance, action) -> bool
            "tenant": "account_id",  # optional: attribute name, or dotted path of (instance) -> str
            "coalesce": True,  # optional, default True
            "ordering_key": True,  # optional: True (one key per object), False, or like "tenant"
        },
    }

or in code, `register_model_hook(Order, created="order.created", ...)`, also usable as a class
decorator. Both connect `post_save` and `post_delete` for the model.

Every hook goes through `publish()`: the Event row is written in the transaction that saves
the object and fanned out only when it commits, so a rolled-back save sends nothing. It is
written at save time, not at commit, so that it commits or rolls back with the change (a crash
after commit cannot lose it) and a payload the catalog refuses raises PublishError from
`save()`, rolling the change back. Save hooked models inside `transaction.atomic()` (or with
ATOMIC_REQUESTS): in autocommit Django has already committed the row when `post_save` runs.
Hooks write to the database of the Event table; the host model should share it. A delete
sends the state before deletion with the original id (`post_delete` runs before Django clears
the instance's pk). Saves by `loaddata` (`raw`) send nothing. Django sends no signal for
`bulk_create()` or a queryset's `update()`: publish those with `publish_many()`.

Coalescing (default on), inside a transaction, per object: saves after the first update its
pending event instead of adding one, so one `updated` carries the last state, and a create
followed by updates is one `created` with the final state. Create then delete in one
transaction sends nothing (the pending `created` event is deleted); update then delete sends
only `deleted`. Savepoints are honoured: what an inner `atomic()` that rolls back recorded is
forgotten, exactly as Django forgets its `on_commit` callbacks (deliveries/coalescing.py).
"""

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

from django.apps import apps
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured
from django.db import models, router, transaction
from django.db.models.signals import post_delete, post_save
from django.utils.module_loading import import_string

from endpoints.app_settings import webhook_settings
from endpoints.event_types import event_type_error

from .catalog import event_types as catalog_event_types
from .coalescing import PendingHooks, PendingRecord
from .model_payloads import serialize_instance

logger = logging.getLogger(__name__)

ACTIONS = ("created", "updated", "deleted")
SPEC_KEYS = frozenset({"events", "serializer", "filter", "tenant", "coalesce", "ordering_key"})


@dataclass(frozen=True)
class ModelHook:
    """Which events a model's saves and deletes publish, and how its payload and tenant are
    made. `serializer`, `filter` and `tenant` are callables or dotted paths, resolved when first
    used (the system check resolves them at start-up); `tenant` may also be an attribute name."""

    model: type[models.Model]
    events: Mapping[str, str]  # action ("created", "updated", "deleted") -> event type
    serializer: Callable[[models.Model], dict] | str | None = None
    filter: Callable[[models.Model, str], bool] | str | None = None
    tenant: Callable[[models.Model], str] | str | None = None
    coalesce: bool = True
    from_settings: bool = False
    ordering_key: Callable[[models.Model], str | None] | str | bool = True

    def payload(self, instance: models.Model) -> dict:
        return _resolve(self.serializer)(instance) if self.serializer else serialize_instance(instance)

    def allows(self, instance: models.Model, action: str) -> bool:
        return self.filter is None or bool(_resolve(self.filter)(instance, action))

    def tenant_of(self, instance: models.Model) -> str:
        value = _value_of(self.tenant, instance)
        return "" if value is None else str(value)

    def ordering_key_of(self, instance: models.Model) -> str | None:
        """The event's ordering key: by default one per object (its saves and delete reach
        each endpoint in order), e.g. `shop.order:7`; None with `ordering_key=False`."""
        from .publishing import ordering_key_error

        spec = self.ordering_key
        if spec is False:
            return None
        if spec is True:
            pk = str(instance.pk)
            if ordering_key_error(pk) or len(pk) > 100:  # a key is printable ASCII, sent in a header
                pk = hashlib.sha256(pk.encode("utf-8", "surrogatepass")).hexdigest()[:40]
            return f"{self.model._meta.label_lower}:{pk}"
        value = _value_of(spec, instance)
        return None if value is None else str(value)


def _value_of(spec: Callable | str | None, instance: models.Model):
    """A value of `instance` named by a callable, a dotted path of one, or an attribute name."""
    if spec is None:
        return None
    if callable(spec) or "." in spec:
        return _resolve(spec)(instance)
    value = getattr(instance, spec)
    return value() if callable(value) else value


_hooks: dict[type[models.Model], ModelHook] = {}


def register_model_hook(
    model: type[models.Model] | None = None,
    /,
    *,
    created: str | None = None,
    updated: str | None = None,
    deleted: str | None = None,
    serializer: Callable[[models.Model], dict] | str | None = None,
    filter: Callable[[models.Model, str], bool] | str | None = None,
    tenant: Callable[[models.Model], str] | str | None = None,
    coalesce: bool = True,
    ordering_key: Callable[[models.Model], str | None] | str | bool = True,
):
    """Publish `created` / `updated` / `deleted` events when instances of `model` are saved or
    deleted (only the actions given an event type). Without `model`, a class decorator.

    `serializer(instance) -> dict` makes the payload (default: `serialize_instance`);
    `filter(instance, action) -> bool` returning False sends nothing for that save or delete;
    `tenant` is an attribute name, or a callable / dotted path of `(instance) -> str`;
    `coalesce` (default True) folds several saves of one object in one transaction into one
    event; `ordering_key` (default True: one key per object, so its events reach each endpoint
    in order) is False, or names the key like `tenant` does. A model has at most one hook;
    registering it twice raises ImproperlyConfigured.
    """
    events = {action: name for action, name in zip(ACTIONS, (created, updated, deleted), strict=True) if name}

    def register_hook(model_class: type[models.Model]) -> type[models.Model]:
        if not (isinstance(model_class, type) and issubclass(model_class, models.Model)):
            raise ImproperlyConfigured(f"register_model_hook needs a model class, not {model_class!r}")
        if not events:
            raise ImproperlyConfigured(
                f"register_model_hook({model_class.__name__}) needs an event type for created, updated or deleted"
            )
        if model_class in _hooks:
            raise ImproperlyConfigured(f"{model_class._meta.label} already has a webhook model hook")
        _connect(ModelHook(model_class, events, serializer, filter, tenant, coalesce, ordering_key=ordering_key))
        return model_class

    return register_hook if model is None else register_hook(model)


def unregister_model_hook(model: type[models.Model]) -> None:
    """Stop publishing events for `model` (tests; hooks swapped at run time)."""
    _hooks.pop(model, None)
    dispatch_uid = f"deliveries.hooks.{model._meta.label}"
    post_save.disconnect(sender=model, dispatch_uid=dispatch_uid)
    post_delete.disconnect(sender=model, dispatch_uid=dispatch_uid)


def connect_configured_hooks() -> None:
    """Register the hooks of WEBHOOKS_MODEL_HOOKS; called from `DeliveriesConfig.ready()`.

    Entries the system check refuses are skipped here: `check_model_hooks` reports them.
    """
    for label, spec in _configured().items():
        errors = _spec_errors(label, spec)
        if errors:
            logger.error("model hook %s is not connected: %s", label, "; ".join(e.msg for e in errors))
            continue
        model = apps.get_model(label)
        current = _hooks.get(model)
        if current is not None and not current.from_settings:
            continue  # also registered in code: check_model_hooks reports it
        unregister_model_hook(model)
        _connect(
            ModelHook(
                model,
                dict(spec["events"]),
                spec.get("serializer"),
                spec.get("filter"),
                spec.get("tenant"),
                spec.get("coalesce", True),
                from_settings=True,
                ordering_key=spec.get("ordering_key", True),
            )
        )


def _configured() -> dict:
    return webhook_settings.MODEL_HOOKS or {}


def _connect(hook: ModelHook) -> None:
    _hooks[hook.model] = hook
    dispatch_uid = f"deliveries.hooks.{hook.model._meta.label}"
    post_save.connect(_saved, sender=hook.model, weak=False, dispatch_uid=dispatch_uid)
    post_delete.connect(_deleted, sender=hook.model, weak=False, dispatch_uid=dispatch_uid)


@cache
def _import(path: str) -> Callable:
    return import_string(path)


def _resolve(spec: Callable | str) -> Callable:
    return spec if callable(spec) else _import(spec)


# --- Signal receivers and coalescing --------------------------------------------------------


def _saved(sender, instance: models.Model, created: bool, raw: bool = False, **kwargs) -> None:
    if not raw:  # loaddata restores rows; nothing happened in the product
        _fire(sender, instance, "created" if created else "updated")


def _deleted(sender, instance: models.Model, **kwargs) -> None:
    _fire(sender, instance, "deleted")


def _fire(model: type[models.Model], instance: models.Model, action: str) -> None:
    from .models import Event
    from .publishing import publish

    hook = _hooks.get(model)
    if hook is None or not hook.allows(instance, action):
        return
    ordered = {"ordering_key": hook.ordering_key_of(instance)}
    connection = transaction.get_connection(router.db_for_write(Event))
    if not (hook.coalesce and connection.in_atomic_block):
        if action in hook.events:
            publish(hook.events[action], hook.payload(instance), tenant=hook.tenant_of(instance), **ordered)
        return

    pending = PendingHooks.of(connection)
    key = (model._meta.label, instance.pk)
    record = pending.current(key)
    tenant = hook.tenant_of(instance)
    if action == "deleted":
        # The object's pending created/updated event is superseded: receivers get the deletion.
        if record is not None and record.event_id is not None:
            Event.objects.filter(pk=record.event_id).delete()
        if record is not None and record.kind == "created":
            pending.push(key, "gone")  # created and deleted in one transaction
            return
        if "deleted" in hook.events:
            publish(hook.events["deleted"], hook.payload(instance), tenant=tenant, **ordered)
        if record is not None:
            pending.push(key, "deleted")
        return
    if record is not None and record.event_id is not None and record.tenant == tenant:
        _revise(record, hook.payload(instance))
        return
    # No pending event yet (or it belongs to another tenant, whose endpoints keep theirs).
    if action in hook.events:
        event = publish(hook.events[action], hook.payload(instance), tenant=tenant, **ordered)
        pending.push(key, action, event.pk, event.type, tenant)


def _revise(record: PendingRecord, data: dict) -> None:
    """Replace the payload of the object's pending event with its latest state."""
    from .models import Event
    from .publishing import validated_payload

    payload = validated_payload(record.event_type, data)
    # Both columns: the text is what is sent (see Event).
    Event.objects.filter(pk=record.event_id).update(payload=payload.value, payload_json=payload.text)


# --- System check ---------------------------------------------------------------------------


@register()
def check_model_hooks(app_configs, **kwargs) -> list[Error]:
    """WEBHOOKS_MODEL_HOOKS and hooks registered in code: models exist, event types are valid
    (and in WEBHOOKS_EVENT_TYPES when that is configured), dotted paths import."""
    configured = _configured()
    if not isinstance(configured, dict):
        return [
            Error(
                f"WEBHOOKS_MODEL_HOOKS must be a dict of 'app_label.Model' to a hook, not {type(configured).__name__}.",
                id="webhooks.E101",
            )
        ]
    errors = []
    for label, spec in configured.items():
        errors += _spec_errors(label, spec)
        model = _model(label)
        hook = _hooks.get(model) if model is not None else None
        if hook is not None and not hook.from_settings:
            errors.append(
                Error(
                    f"{label} has a hook both in WEBHOOKS_MODEL_HOOKS and from register_model_hook(); keep one.",
                    id="webhooks.E108",
                )
            )
    for hook in _hooks.values():
        if not hook.from_settings:
            where = f"register_model_hook({hook.model._meta.label})"
            errors += _event_type_errors(where, hook.events)
            ordering = None if isinstance(hook.ordering_key, bool) else hook.ordering_key
            errors += _path_errors(where, hook.model, hook.serializer, hook.filter, hook.tenant, ordering)
    return errors


def _model(label: object) -> type[models.Model] | None:
    try:
        return apps.get_model(label)
    except (LookupError, ValueError, TypeError, AttributeError):
        return None


def _spec_errors(label: object, spec: object) -> list[Error]:
    where = f"WEBHOOKS_MODEL_HOOKS[{label!r}]"
    model = _model(label)
    if model is None:
        return [Error(f"{where}: no installed model {label!r}; use 'app_label.ModelName'.", id="webhooks.E102")]
    if not isinstance(spec, dict) or not set(spec) <= SPEC_KEYS or not isinstance(spec.get("events"), dict):
        return [
            Error(
                f"{where} must be a dict with 'events' (a dict) and the optional keys 'serializer', "
                f"'filter', 'tenant', 'coalesce', 'ordering_key'; got {spec!r}.",
                id="webhooks.E103",
            )
        ]
    errors = []
    events = spec["events"]
    if not events or not set(events) <= set(ACTIONS):
        errors.append(
            Error(
                f"{where}['events'] must map some of 'created', 'updated', 'deleted' to event types; got {events!r}.",
                id="webhooks.E103",
            )
        )
    if not isinstance(spec.get("coalesce", True), bool):
        errors.append(Error(f"{where}['coalesce'] must be True or False.", id="webhooks.E103"))
    errors += _event_type_errors(where, {a: t for a, t in events.items() if a in ACTIONS})
    ordering = spec.get("ordering_key", True)
    errors += _path_errors(
        where,
        model,
        spec.get("serializer"),
        spec.get("filter"),
        spec.get("tenant"),
        None if isinstance(ordering, bool) else ordering,
    )
    return errors


def _event_type_errors(where: str, events: Mapping[str, str]) -> list[Error]:
    errors = []
    catalog = catalog_event_types()
    for action, event_type in events.items():
        problem = event_type_error(event_type)
        if problem:
            errors.append(Error(f"{where}: {action}: {problem}.", id="webhooks.E104"))
        elif catalog and isinstance(catalog, dict) and event_type not in catalog:
            errors.append(
                Error(
                    f"{where}: {action}: event type {event_type!r} is not in WEBHOOKS_EVENT_TYPES.", id="webhooks.E107"
                )
            )
    return errors


def _path_errors(where: str, model: type[models.Model], serializer, filter_, tenant, ordering_key) -> list[Error]:
    errors = []
    named = (("serializer", serializer), ("filter", filter_), ("tenant", tenant), ("ordering_key", ordering_key))
    for name, spec in named:
        if spec is None or callable(spec):
            continue
        if not isinstance(spec, str):
            errors.append(
                Error(f"{where}: {name} must be a dotted path or a callable, not {spec!r}.", id="webhooks.E105")
            )
        elif name in ("tenant", "ordering_key") and "." not in spec:
            if not hasattr(model, spec):
                errors.append(
                    Error(
                        f"{where}: {name} {spec!r} is not an attribute of {model._meta.label}.",
                        id="webhooks.E106",
                    )
                )
        else:
            try:
                target = _import(spec)
            except ImportError as exc:
                errors.append(Error(f"{where}: {name} {spec!r} cannot be imported: {exc}", id="webhooks.E105"))
                continue
            if not callable(target):
                errors.append(Error(f"{where}: {name} {spec!r} is not callable.", id="webhooks.E105"))
    return errors
