"""Verify the webhooks this project sends, on the receiving side, with the standard library only.

    from webhook_receiver import verify, WebhookVerificationError

    payload = verify(secret, request_headers, raw_body)   # the parsed JSON body, a dict

Both signature schemes are detected from the headers:

- Standard Webhooks (the default): `webhook-id`, `webhook-timestamp` and
  `webhook-signature: v1,<base64> [v1,<base64> ...]`, an HMAC-SHA256 of "{id}.{timestamp}.{body}"
  keyed with the base64-decoded part of the secret after `whsec_`.
- Stripe-compatible: `X-Webhook-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`, an HMAC-SHA256 of
  "{t}.{body}" keyed with the whole secret string, and `X-Webhook-Id`.

A request is accepted when any `v1` entry matches (entries of other versions, such as `v1a` or
`v2`, are ignored) and its timestamp is within `tolerance` seconds of now, in either direction.
Given public keys (`whpk_...`) instead of secrets, `verify` checks the `v1a` (ed25519) entries
of the Standard Webhooks headers instead (webhook_receiver/ed25519.py; needs `cryptography`).
Every rejection raises a subclass of `WebhookVerificationError` whose message says what is
wrong; malformed input of any kind never raises anything else. A misconfigured secret (not a
`str`, empty, not base64 after `whsec_`) is a programming error and raises `ValueError`, and so
is a `tolerance` that is not an int or float from 0 to `MAX_TOLERANCE` (one day; not NaN).

This module depends on nothing but the Python standard library; copy it into any project.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_TOLERANCE",
    "MAX_TOLERANCE",
    "InvalidPayloadError",
    "InvalidSignatureError",
    "MissingHeaderError",
    "TimestampOutsideToleranceError",
    "VerifiedWebhook",
    "WebhookVerificationError",
    "validate_tolerance",
    "verify",
    "verify_webhook",
]

DEFAULT_TOLERANCE = 300  # seconds, both ways
# Our sender signs every attempt afresh: the tolerance only covers clock skew and transit. A day
# is far beyond that, and far below how long the dedupe store remembers processed ids (7 days).
MAX_TOLERANCE = 24 * 3600

STANDARD = "standard"
TIMESTAMPED_HEX = "timestamped_hex"

SECRET_PREFIX = "whsec_"

# Header names as we report them; looked up case-insensitively.
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
X_WEBHOOK_ID = "X-Webhook-Id"
X_WEBHOOK_SIGNATURE = "X-Webhook-Signature"
_NAMES = {
    name.lower(): name for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE, X_WEBHOOK_ID, X_WEBHOOK_SIGNATURE)
}

# Caps on header values: nothing legitimate comes near them, and they bound the work an
# unauthenticated request can cause (an 8 kB signature header holds ~170 entries).
MAX_ID_LENGTH = 256
MAX_TIMESTAMP_LENGTH = 15
MAX_SIGNATURE_LENGTH = 8192

_ID_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: no spaces, no control characters
_TIMESTAMP_RE = re.compile(r"[0-9]+")  # unix seconds; no sign, fraction or whitespace
_HEADER_CHARS_RE = re.compile(r"[\t\x20-\x7e]*")  # visible ASCII, spaces and tabs
_SEPARATOR_RE = re.compile(r"[ \t]+")
_HEX_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")
_SHA256_SIZE = 32


class WebhookVerificationError(Exception):
    """The request is not an authentic, fresh webhook; the message says why."""


class MissingHeaderError(WebhookVerificationError):
    """A header the scheme needs is absent or empty."""


class InvalidSignatureError(WebhookVerificationError):
    """No signature entry matched, or the signature headers are malformed."""


class TimestampOutsideToleranceError(WebhookVerificationError):
    """The signed timestamp is too old or too far in the future."""


class InvalidPayloadError(WebhookVerificationError):
    """The body is authentic but is not a UTF-8 JSON object."""


@dataclass(frozen=True)
class VerifiedWebhook:
    """What `verify_webhook` returns: the payload plus what the headers said about it."""

    id: str | None  # the webhook id, the same on every retry: the dedupe key (None: Stripe form without one)
    timestamp: int  # the signed unix timestamp of this attempt
    payload: dict[str, Any]  # the parsed JSON body
    scheme: str  # "standard", "timestamped_hex" or "standard_ed25519" (v1a)
    secret_index: int  # which of the secrets (or public keys) given matched (0 = the first)


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify a webhook request and return its parsed JSON body.

    `secret` is the endpoint's secret (`whsec_...`), or several (during a rotation on the
    receiving side: the request is accepted if any of them signed it; the first that matches
    wins); for an endpoint that signs with ed25519, its public key(s) (`whpk_...`) instead.
    `headers` is any mapping of the request headers (names in any case; anything with
    `.items()`, such as Django's `request.headers` or `http.server`'s `self.headers`). `body`
    is the raw request body, exactly as received. `tolerance` is how many seconds the signed
    timestamp may differ from `now` (default: the current time) in either direction, at most
    `MAX_TOLERANCE` (one day).

    Raises a `WebhookVerificationError` subclass when the request must be rejected.
    """
    return verify_webhook(secret, headers, body, tolerance, now=now).payload


def verify_webhook(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> VerifiedWebhook:
    """Like `verify`, but return the webhook id, timestamp, scheme and matching secret too."""
    secrets = _secrets(secret)
    validate_tolerance(tolerance)
    if now is not None and not _seconds_within(now, 10**MAX_TIMESTAMP_LENGTH):
        raise ValueError(f"now must be None or a finite, non-negative number of unix seconds; got {_shown(now)}")
    found = _find_headers(headers)
    if any(s.startswith("whpk_") for s in secrets):
        from .ed25519 import verify_v1a  # needs `cryptography`: imported only for public keys

        return verify_v1a(secrets, found, _body_bytes(body), tolerance, now)
    if any(name in found for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE)):
        return _verify_standard(secrets, found, _body_bytes(body), tolerance, now)
    if X_WEBHOOK_SIGNATURE in found or X_WEBHOOK_ID in found:
        return _verify_timestamped_hex(secrets, found, _body_bytes(body), tolerance, now)
    raise MissingHeaderError(
        "missing signature headers: expected webhook-id, webhook-timestamp and webhook-signature "
        "(Standard Webhooks) or X-Webhook-Signature (t=...,v1=...)"
    )


# --- the two schemes ------------------------------------------------------------------------


def _verify_standard(
    secrets: list[str], found: dict[str, str], body: bytes, tolerance: float, now: float | None
) -> VerifiedWebhook:
    for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE):
        if not found.get(name):
            raise MissingHeaderError(f"missing {name} header")
    msg_id = _webhook_id(found[WEBHOOK_ID], WEBHOOK_ID)
    raw_timestamp = found[WEBHOOK_TIMESTAMP]
    timestamp = _timestamp(raw_timestamp, WEBHOOK_TIMESTAMP)
    entries = _entries(found[WEBHOOK_SIGNATURE], WEBHOOK_SIGNATURE, _SEPARATOR_RE)

    candidates: list[bytes] = []
    malformed = 0
    other_versions = 0
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not comma:
            malformed += 1
        elif version != "v1":
            other_versions += 1  # v1a (ed25519), v2, ...: not ours to check
        elif (signature := _b64decode(value)) is None or len(signature) != _SHA256_SIZE:
            malformed += 1
        else:
            candidates.append(signature)
    _no_candidates(candidates, WEBHOOK_SIGNATURE, malformed, other_versions)
    _check_tolerance(timestamp, tolerance, now, WEBHOOK_TIMESTAMP)

    # The timestamp is signed exactly as the header carries it.
    signed = f"{msg_id}.{raw_timestamp}.".encode("ascii") + body
    for index, secret in enumerate(secrets):
        expected = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
        # compare_digest against every entry: no early exit on a near miss.
        if _any_match(expected, candidates):
            payload = _payload(body)
            return VerifiedWebhook(msg_id, timestamp, payload, STANDARD, index)
    raise InvalidSignatureError(_no_match_message(WEBHOOK_SIGNATURE, len(candidates), len(secrets), malformed))


def _verify_timestamped_hex(
    secrets: list[str], found: dict[str, str], body: bytes, tolerance: float, now: float | None
) -> VerifiedWebhook:
    if not found.get(X_WEBHOOK_SIGNATURE):
        raise MissingHeaderError(f"missing {X_WEBHOOK_SIGNATURE} header")
    header_id = _webhook_id(found[X_WEBHOOK_ID], X_WEBHOOK_ID) if found.get(X_WEBHOOK_ID) else None
    entries = _entries(found[X_WEBHOOK_SIGNATURE], X_WEBHOOK_SIGNATURE, re.compile(r","))

    raw_timestamp: str | None = None
    candidates: list[bytes] = []
    malformed = 0
    other_versions = 0
    for entry in entries:
        key, equals, value = entry.strip(" \t").partition("=")
        if not equals:
            malformed += 1
        elif key == "t":
            if raw_timestamp is not None:
                raise InvalidSignatureError(f"{X_WEBHOOK_SIGNATURE} has more than one t= timestamp")
            raw_timestamp = value
        elif key != "v1":
            other_versions += 1
        elif _HEX_SIGNATURE_RE.fullmatch(value):
            candidates.append(bytes.fromhex(value))
        else:
            malformed += 1
    if raw_timestamp is None:
        raise InvalidSignatureError(f"{X_WEBHOOK_SIGNATURE} has no t= timestamp")
    timestamp = _timestamp(raw_timestamp, f"{X_WEBHOOK_SIGNATURE} t=")
    _no_candidates(candidates, X_WEBHOOK_SIGNATURE, malformed, other_versions)
    _check_tolerance(timestamp, tolerance, now, f"{X_WEBHOOK_SIGNATURE} t=")

    signed = f"{raw_timestamp}.".encode("ascii") + body
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
        if _any_match(expected, candidates):
            payload = _payload(body)
            return VerifiedWebhook(_signed_id(header_id, payload), timestamp, payload, TIMESTAMPED_HEX, index)
    raise InvalidSignatureError(_no_match_message(X_WEBHOOK_SIGNATURE, len(candidates), len(secrets), malformed))


def _signed_id(header_id: str | None, payload: dict[str, Any]) -> str | None:
    """The webhook id of a Stripe-compatible request.

    That scheme does not sign X-Webhook-Id, so a replayed request could carry any id and slip
    past deduplication. Our bodies carry the same id, signed: when the body has a string `id`,
    the header must agree with it (and may be absent). None when neither gives an id: the
    signature is still good, but there is nothing to deduplicate on.
    """
    body_id = payload.get("id")
    if not isinstance(body_id, str) or not _ID_RE.fullmatch(body_id) or len(body_id) > MAX_ID_LENGTH:
        body_id = None
    if header_id is not None and body_id is not None and not hmac.compare_digest(header_id, body_id):
        raise InvalidSignatureError(f"{X_WEBHOOK_ID} does not match the id in the signed body")
    return header_id or body_id


# --- pieces -----------------------------------------------------------------------------------


def validate_tolerance(tolerance: object) -> None:
    """Raise `ValueError` unless `tolerance` is an int or float from 0 to `MAX_TOLERANCE`: NaN would
    accept any timestamp (it compares false with everything), and a huge int overflows floats."""
    if not _seconds_within(tolerance, MAX_TOLERANCE):
        raise ValueError(
            f"tolerance must be a number of seconds from 0 to {MAX_TOLERANCE} (an int or float, not a bool, "
            f"NaN or infinity); got {_shown(tolerance)}"
        )


def _seconds_within(value: object, maximum: int) -> bool:
    # Comparisons of int and float are exact in Python (no overflow), and False for NaN.
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value <= maximum


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return "an integer too long to show"
    return text if len(text) <= 40 else f"{text[:37]}..."


def _secrets(secret: str | Sequence[str]) -> list[str]:
    secrets = [secret] if isinstance(secret, str) else list(secret) if isinstance(secret, Iterable) else None
    if not secrets or not all(isinstance(s, str) for s in secrets):
        raise ValueError("secret must be a non-empty string or a non-empty sequence of strings")
    for s in secrets:
        if not s or s != s.strip():
            raise ValueError("a webhook secret is empty or has leading/trailing whitespace")
    return secrets


def _standard_key(secret: str) -> bytes:
    """Standard Webhooks key: the base64 after `whsec_` (padding optional), decoded."""
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    key = _b64decode(encoded + "=" * (-len(encoded) % 4))
    if not key:
        raise ValueError("a Standard Webhooks secret must be 'whsec_' followed by base64")
    return key


def _b64decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _find_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers we read, by canonical name; each at most once."""
    try:
        items = list(headers.items())
    except AttributeError:
        raise TypeError("headers must be a mapping of header names to values") from None
    found: dict[str, str] = {}
    for name, value in items:
        canonical = _NAMES.get(name.lower()) if isinstance(name, str) else None
        if canonical is None:
            continue
        if canonical in found:
            raise InvalidSignatureError(f"{canonical} header given more than once")
        text = bytes(value).decode("latin-1") if isinstance(value, bytes | bytearray) else value
        if not isinstance(text, str):
            raise InvalidSignatureError(f"{canonical} header is not text")
        found[canonical] = text.strip(" \t")
    return found


def _webhook_id(value: str, name: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise InvalidSignatureError(f"{name} header is longer than {MAX_ID_LENGTH} characters")
    if not _ID_RE.fullmatch(value):
        raise InvalidSignatureError(f"{name} header has spaces, control or non-ASCII characters")
    return value


def _timestamp(value: str, name: str) -> int:
    if len(value) > MAX_TIMESTAMP_LENGTH or not _TIMESTAMP_RE.fullmatch(value):
        raise InvalidSignatureError(f"{name} timestamp is not an integer number of unix seconds")
    return int(value)


def _entries(value: str, name: str, separator: re.Pattern[str]) -> list[str]:
    if len(value) > MAX_SIGNATURE_LENGTH:
        raise InvalidSignatureError(f"{name} header is longer than {MAX_SIGNATURE_LENGTH} characters")
    if not _HEADER_CHARS_RE.fullmatch(value):
        raise InvalidSignatureError(f"{name} header has control or non-ASCII characters")
    return [entry for entry in separator.split(value) if entry.strip(" \t")]


def _no_candidates(candidates: list[bytes], name: str, malformed: int, other_versions: int) -> None:
    if candidates:
        return
    if malformed:
        raise InvalidSignatureError(f"{name} has no well-formed v1 signature ({malformed} malformed)")
    if other_versions:
        raise InvalidSignatureError(f"{name} has no v1 signature (only other versions, which are not checked)")
    raise InvalidSignatureError(f"{name} has no v1 signature")


def _check_tolerance(timestamp: int, tolerance: float, now: float | None, name: str) -> None:
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise TimestampOutsideToleranceError(
            f"{name} is {current - timestamp:.0f} s in the past, beyond the tolerance of {tolerance} s "
            "(a replay, a delayed request, or a wrong clock)"
        )
    if timestamp > current + tolerance:
        raise TimestampOutsideToleranceError(
            f"{name} is {timestamp - current:.0f} s in the future, beyond the tolerance of {tolerance} s "
            "(a wrong clock on one side)"
        )


def _any_match(expected: bytes, candidates: list[bytes]) -> bool:
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def _no_match_message(name: str, checked: int, secret_count: int, malformed: int) -> str:
    secrets = "the secret" if secret_count == 1 else f"any of the {secret_count} secrets"
    extra = f"; {malformed} malformed entries ignored" if malformed else ""
    return (
        f"no v1 signature in {name} matches {secrets} ({checked} checked{extra}): "
        "a wrong secret, or a body changed after signing"
    )


def _body_bytes(body: bytes | str) -> bytes:
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


def _payload(body: bytes) -> dict[str, Any]:
    """The verified body as a JSON object: UTF-8, strict JSON (no NaN or Infinity)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayloadError("body is not UTF-8") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge numbers, deep nesting
        raise InvalidPayloadError(f"body is not valid JSON: {str(exc)[:100]}") from None
    if not isinstance(payload, dict):
        raise InvalidPayloadError(f"body is JSON but not an object ({type(payload).__name__})")
    return payload
