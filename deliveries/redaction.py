"""What an attempt's record may keep: request headers with credentials and signatures
redacted, and the receiver's answer scrubbed of them and capped (a receiver may echo our
request back, e.g. a debugging endpoint or an error page)."""

import re
from collections.abc import Iterable, Mapping

from endpoints.custom_headers import is_sensitive_header

__all__ = [
    "REDACTED",
    "capped_headers",
    "clean_text",
    "redact_headers",
    "scrub",
    "scrubbed_values",
]

REDACTED = "[redacted]"
# Attempt records keep request headers for operators, but never credentials or signatures
# (endpoints/custom_headers.py says which headers those are).
# Pieces of a redacted value scrubbed on their own too (a signature entry, a bearer token);
# shorter pieces ("v1", "Bearer", a timestamp) are not secret.
MIN_SCRUBBED_PIECE = 16
MAX_RECORDED_HEADER_VALUE = 1000


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
    """`text` with every one of `values` replaced by [redacted]."""
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def clean_text(text: str) -> str:
    """`text` as PostgreSQL can store it (no NUL characters)."""
    return text.replace("\x00", "\ufffd")


def capped_headers(headers: dict[str, str], hidden: list[str] = ()) -> dict[str, str]:
    """Response headers as stored: at most 100 (http.client's own limit), each value capped
    and scrubbed of `hidden` values."""
    return {
        clean_text(k)[:200]: scrub(clean_text(v), hidden)[:MAX_RECORDED_HEADER_VALUE]
        for k, v in list(headers.items())[:100]
    }
