"""Event type names and the subscription patterns that select them.

An event type is dot-separated segments of letters, digits, `_` and `-` (`order.paid`,
`invoice.payment_failed`). A pattern is the same with `*` standing for any run of characters,
dots included: `order.*` matches `order.paid` and `order.refund.created`, `*` matches all.
An endpoint with no patterns receives every event type.
"""

import re
from collections.abc import Iterable

MAX_EVENT_TYPE_LENGTH = 100
EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
PATTERN_RE = re.compile(r"[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*")


def event_type_error(event_type: object) -> str | None:
    """Why `event_type` is not a valid event type name, or None."""
    if not isinstance(event_type, str):
        return f"event type must be a string, not {type(event_type).__name__}"
    if not event_type or len(event_type) > MAX_EVENT_TYPE_LENGTH:
        return f"event type must be 1 to {MAX_EVENT_TYPE_LENGTH} characters long"
    if not EVENT_TYPE_RE.fullmatch(event_type):
        return (
            f"event type {event_type!r} must be dot-separated segments of letters, digits, "
            "'_' and '-', such as 'order.paid'"
        )
    return None


def pattern_error(pattern: object) -> str | None:
    """Why `pattern` is not a valid subscription pattern, or None."""
    if not isinstance(pattern, str):
        return f"pattern must be a string, not {type(pattern).__name__}"
    if not pattern or len(pattern) > MAX_EVENT_TYPE_LENGTH:
        return f"pattern must be 1 to {MAX_EVENT_TYPE_LENGTH} characters long"
    if not PATTERN_RE.fullmatch(pattern):
        return (
            f"pattern {pattern!r} must be dot-separated segments of letters, digits, '_', '-' "
            "and '*', such as 'order.*'"
        )
    return None


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of `patterns`; None means "every type" (no patterns)."""
    parts = [".*".join(re.escape(piece) for piece in p.split("*")) for p in patterns]
    if not parts:
        return None
    return re.compile("|".join(f"(?:{part})" for part in parts))


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to `patterns` receives `event_type`."""
    regex = compile_patterns(patterns)
    return regex is None or regex.fullmatch(event_type) is not None
