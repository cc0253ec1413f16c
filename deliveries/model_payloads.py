"""The default payload of a model hook: a model instance as a dict of plain JSON values."""

import base64
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.fields.files import FieldFile

from .publishing import PublishError

_encoder = DjangoJSONEncoder()


def serialize_instance(instance: models.Model) -> dict[str, Any]:
    """`{"id": pk, <attname>: value, ...}` over the instance's concrete fields.

    Foreign keys appear as their ids (`customer_id`), datetimes, dates, times, durations,
    decimals and UUIDs as Django's JSON encoder writes them (`"2026-01-02T03:04:05.123Z"`,
    `"12.50"`), files as their URL when the storage can give one, else their name (None when
    empty), binary data as base64, keys of dicts (a JSONField's value) as strings (two keys
    that become the same string, 1 and "1", raise PublishError). A value of any other type is
    left as it is, so `publish()` says which one it cannot serialize.
    """
    data: dict[str, Any] = {"id": json_value(instance.pk)}
    for field in instance._meta.concrete_fields:
        data[field.attname] = json_value(field.value_from_object(instance))
    return data


def json_value(value: Any) -> Any:
    """`value` as plain JSON (str, number, bool, None, list, dict) where Django knows how."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, FieldFile):
        return file_reference(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return _json_object(value)
    try:
        return _encoder.default(value)
    except TypeError:
        return value


def _json_object(mapping: dict) -> dict[str, Any]:
    """`mapping` with string keys; PublishError when two keys become the same string, as
    `{1: "x", "1": "y"}` would otherwise lose one of its values."""
    result: dict[str, Any] = {}
    keys: dict[str, object] = {}
    for key, item in mapping.items():
        text = key if isinstance(key, str) else str(key)
        if text in keys:
            raise PublishError(
                f"keys {keys[text]!r} and {key!r} both become {text!r} in the payload; the keys of a field's "
                "value must stay distinct as strings"
            )
        keys[text] = key
        result[text] = json_value(item)
    return result


def file_reference(value: FieldFile) -> str | None:
    """The file's URL if its storage serves one, else its name; None for an empty field."""
    if not value:
        return None
    try:
        return value.storage.url(value.name)
    except (NotImplementedError, ValueError):
        return value.name
