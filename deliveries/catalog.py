"""The event type catalog: which event types exist, and the JSON Schema of each one's payload.

Optional. `WEBHOOKS_EVENT_TYPES = {"order.paid": {"description": "...", "schema": {...}}}`;
empty (the default) accepts every well-formed type with any payload. Once it lists anything,
`publish()`, `publish_many()` and model hooks refuse a type it does not list, and a payload its
schema rejects, before anything is written. The schemas are checked at start-up (system check).
"""

from functools import cache
from typing import Any

from django.core.checks import Error, register
from django.core.signals import setting_changed
from django.dispatch import receiver
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from endpoints.app_settings import webhook_settings
from endpoints.event_types import event_type_error

ENTRY_KEYS = frozenset({"description", "schema"})


def event_types() -> dict[str, dict[str, Any]]:
    """The configured catalog (`WEBHOOKS_EVENT_TYPES`); empty means "any type"."""
    return webhook_settings.EVENT_TYPES or {}


def catalog_error(event_type: str, payload: Any) -> str | None:
    """Why the catalog refuses `payload` (as stored: plain JSON values) for `event_type`, or None."""
    catalog = event_types()
    if not catalog:
        return None
    if event_type not in catalog:
        return f"event type {event_type!r} is not in WEBHOOKS_EVENT_TYPES; add it there to publish it"
    validator = _validator(event_type)
    if validator is None:
        return None
    error = best_match(validator.iter_errors(payload))
    if error is None:
        return None
    return f"payload of {event_type!r} does not match its schema at {error.json_path}: {error.message}"


@cache
def _validator(event_type: str) -> Validator | None:
    schema = (event_types()[event_type] or {}).get("schema")
    if schema is None:
        return None
    # The draft is the one the schema's "$schema" names; 2020-12 when it names none.
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@receiver(setting_changed, dispatch_uid="deliveries.catalog.clear_validators")
def _clear_validators(setting: str, **kwargs) -> None:
    if setting == "WEBHOOKS_EVENT_TYPES":
        _validator.cache_clear()


@register()
def check_event_catalog(app_configs, **kwargs) -> list[Error]:
    """WEBHOOKS_EVENT_TYPES: valid type names, known keys, and schemas that are valid JSON Schema."""
    catalog = webhook_settings.EVENT_TYPES or {}
    if not isinstance(catalog, dict):
        return [
            Error(
                f"WEBHOOKS_EVENT_TYPES must be a dict of event type to {{'description': ..., 'schema': ...}}, "
                f"not {type(catalog).__name__}.",
                id="webhooks.E111",
            )
        ]
    errors = []
    for event_type, entry in catalog.items():
        where = f"WEBHOOKS_EVENT_TYPES[{event_type!r}]"
        name_error = event_type_error(event_type)
        if name_error:
            errors.append(Error(f"{where}: {name_error}.", id="webhooks.E112"))
        if entry is None:
            continue
        if not isinstance(entry, dict) or not set(entry) <= ENTRY_KEYS:
            errors.append(
                Error(
                    f"{where} must be a dict with the optional keys 'description' and 'schema', not {entry!r}.",
                    id="webhooks.E113",
                )
            )
            continue
        if "schema" not in entry or entry["schema"] is None:
            continue
        schema = entry["schema"]
        if not isinstance(schema, dict | bool):
            errors.append(Error(f"{where}['schema'] must be a JSON Schema (a dict).", id="webhooks.E114"))
            continue
        try:
            validator_for(schema, default=Draft202012Validator).check_schema(schema)
        except SchemaError as exc:
            errors.append(
                Error(
                    f"{where}['schema'] is not a valid JSON Schema at {exc.json_path}: {exc.message}",
                    id="webhooks.E114",
                )
            )
    return errors
