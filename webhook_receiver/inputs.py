"""The request as received, read defensively: header lookup, ids, timestamps, signature
entries, the body and the verifier's own arguments. Everything malformed becomes a
`WebhookVerificationError` (a rejection) or, for the caller's own arguments, a `ValueError`."""

import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import InvalidPayloadError, InvalidSignatureError, TimestampOutsideToleranceError

DEFAULT_TOLERANCE = 300  # seconds, both ways
# Our sender signs every attempt afresh: the tolerance only covers clock skew and transit. A day
# is far beyond that, and far below how long the dedupe store remembers processed ids (7 days).
MAX_TOLERANCE = 24 * 3600

SECRET_PREFIX = "whsec_"

# Caps on header values: nothing legitimate comes near them, and they bound the work an
# unauthenticated request can cause (an 8 kB signature header holds ~170 entries).
MAX_ID_LENGTH = 256
MAX_TIMESTAMP_LENGTH = 15
MAX_SIGNATURE_LENGTH = 8192

ID_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no spaces, no control characters
_TIMESTAMP_RE = re.compile(r"[0-9]+")  # unix seconds; no sign, fraction or whitespace
_HEADER_CHARS_RE = re.compile(r"[\t\x20-\x7e]*")  # visible ASCII, spaces and tabs
SHA256_SIZE = 32


def validate_tolerance(tolerance: object) -> None:
    """Raise `ValueError` unless `tolerance` is an int or float from 0 to `MAX_TOLERANCE`: NaN would
    accept any timestamp (it compares false with everything), and a huge int overflows floats."""
    if not _seconds_within(tolerance, MAX_TOLERANCE):
        raise ValueError(
            f"tolerance must be a number of seconds from 0 to {MAX_TOLERANCE} (an int or float, not a bool, "
            f"NaN or infinity); got {shown(tolerance)}"
        )


def validate_now(now: object) -> None:
    """Raise `ValueError` unless `now` is None or a plausible number of unix seconds."""
    if now is not None and not _seconds_within(now, 10**MAX_TIMESTAMP_LENGTH):
        raise ValueError(f"now must be None or a finite, non-negative number of unix seconds; got {shown(now)}")


def _seconds_within(value: object, maximum: int) -> bool:
    # Comparisons of int and float are exact in Python (no overflow), and False for NaN.
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value <= maximum


def shown(value: object) -> str:
    """`value` as an error message may quote it: repr, cut to 40 characters."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return "an integer too long to show"
    return text if len(text) <= 40 else f"{text[:37]}..."


def secret_list(secret: str | Sequence[str]) -> list[str]:
    """The secrets given, as a list; `ValueError` for anything but non-empty strings."""
    secrets = [secret] if isinstance(secret, str) else list(secret) if isinstance(secret, Iterable) else None
    if not secrets or not all(isinstance(s, str) for s in secrets):
        raise ValueError("secret must be a non-empty string or a non-empty sequence of strings")
    for s in secrets:
        if not s or s != s.strip():
            raise ValueError("a webhook secret is empty or has leading/trailing whitespace")
    return secrets


def standard_key(secret: str) -> bytes:
    """Standard Webhooks key: the base64 after `whsec_` (padding optional), decoded."""
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    key = b64decode(encoded + "=" * (-len(encoded) % 4))
    if not key:
        raise ValueError("a Standard Webhooks secret must be 'whsec_' followed by base64")
    return key


def b64decode(value: str) -> bytes | None:
    """Strict base64 (standard alphabet, padded), or None."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def find_headers(headers: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The headers called `names` (in any case), by the name as given; each at most once."""
    wanted = {name.lower(): name for name in names}
    try:
        items = list(headers.items())
    except AttributeError:
        raise TypeError("headers must be a mapping of header names to values") from None
    found: dict[str, str] = {}
    for name, value in items:
        canonical = wanted.get(name.lower()) if isinstance(name, str) else None
        if canonical is None:
            continue
        if canonical in found:
            raise InvalidSignatureError(f"{canonical} header given more than once")
        text = bytes(value).decode("latin-1") if isinstance(value, bytes | bytearray) else value
        if not isinstance(text, str):
            raise InvalidSignatureError(f"{canonical} header is not text")
        found[canonical] = text.strip(" \t")
    return found


def webhook_id(value: str, name: str) -> str:
    """A webhook id header's value, checked: visible ASCII, at most MAX_ID_LENGTH characters."""
    if len(value) > MAX_ID_LENGTH:
        raise InvalidSignatureError(f"{name} header is longer than {MAX_ID_LENGTH} characters")
    if not ID_RE.fullmatch(value):
        raise InvalidSignatureError(f"{name} header has spaces, control or non-ASCII characters")
    return value


def timestamp(value: str, name: str) -> int:
    """Unix seconds written as digits only."""
    if len(value) > MAX_TIMESTAMP_LENGTH or not _TIMESTAMP_RE.fullmatch(value):
        raise InvalidSignatureError(f"{name} timestamp is not an integer number of unix seconds")
    return int(value)


def signature_value(value: str, name: str) -> str:
    """A signature header's value, checked: bounded, visible ASCII, spaces and tabs."""
    if len(value) > MAX_SIGNATURE_LENGTH:
        raise InvalidSignatureError(f"{name} header is longer than {MAX_SIGNATURE_LENGTH} characters")
    if not _HEADER_CHARS_RE.fullmatch(value):
        raise InvalidSignatureError(f"{name} header has control or non-ASCII characters")
    return value


def entries(value: str, name: str, separator: re.Pattern[str]) -> list[str]:
    """The non-empty entries of a signature header."""
    return [entry for entry in separator.split(signature_value(value, name)) if entry.strip(" \t")]


def no_candidates(candidates: list[bytes], name: str, malformed: int, other_versions: int) -> None:
    """Reject a signature header with no well-formed v1 entry, saying what it had instead."""
    if candidates:
        return
    if malformed:
        raise InvalidSignatureError(f"{name} has no well-formed v1 signature ({malformed} malformed)")
    if other_versions:
        raise InvalidSignatureError(f"{name} has no v1 signature (only other versions, which are not checked)")
    raise InvalidSignatureError(f"{name} has no v1 signature")


def check_tolerance(signed_at: int, tolerance: float, now: float | None, name: str) -> None:
    """Reject a signed timestamp more than `tolerance` seconds from `now`, either way."""
    current = time.time() if now is None else now
    if signed_at < current - tolerance:
        raise TimestampOutsideToleranceError(
            f"{name} is {current - signed_at:.0f} s in the past, beyond the tolerance of {tolerance} s "
            "(a replay, a delayed request, or a wrong clock)"
        )
    if signed_at > current + tolerance:
        raise TimestampOutsideToleranceError(
            f"{name} is {signed_at - current:.0f} s in the future, beyond the tolerance of {tolerance} s "
            "(a wrong clock on one side)"
        )


def any_match(expected: bytes, candidates: list[bytes]) -> bool:
    """Whether any candidate equals `expected`; compares every one, in constant time each."""
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def no_match_message(name: str, checked: int, secret_count: int, malformed: int) -> str:
    secrets = "the secret" if secret_count == 1 else f"any of the {secret_count} secrets"
    extra = f"; {malformed} malformed entries ignored" if malformed else ""
    return (
        f"no v1 signature in {name} matches {secrets} ({checked} checked{extra}): "
        "a wrong secret, or a body changed after signing"
    )


def body_bytes(body: bytes | str) -> bytes:
    """The raw body as bytes (a str is encoded as UTF-8, as it was sent)."""
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPayloadError("body is not valid UTF-8 text") from None
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError("body must be the raw request body, bytes or str")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def payload(body: bytes) -> dict[str, Any]:
    """The verified body as a JSON object: UTF-8, strict JSON (no NaN or Infinity)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayloadError("body is not UTF-8") from None
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge numbers, deep nesting
        raise InvalidPayloadError(f"body is not valid JSON: {str(exc)[:100]}") from None
    if not isinstance(parsed, dict):
        raise InvalidPayloadError(f"body is JSON but not an object ({type(parsed).__name__})")
    return parsed
