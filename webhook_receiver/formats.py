"""The signature formats our sender can use, each with its verifier, and the presets that name
the combinations receivers already know.

`VERIFIERS` maps each scheme to its verifier: a new format is one entry and one function, and
an unknown scheme is a `ValueError`, never a fallback to another format.

- `standard`: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> ...`, an
  HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the base64-decoded part after `whsec_`.
- `timestamped_hex` (Stripe's form): `<header>: t=<ts>,v1=<hex>[,v1=<hex>...]`, an HMAC-SHA256
  of "{t}.{body}" keyed with the whole secret string; `X-Webhook-Id`.
- `standard_ed25519`: the Standard Webhooks headers with `v1a,<base64>` entries, an ed25519
  signature of "{id}.{timestamp}.{body}", verified with the endpoint's public key (`whpk_...`).
  Its verifier lives in webhook_receiver/ed25519.py, the one module that needs `cryptography`,
  imported only when public keys are given.
- `body_hmac` (GitHub-, Shopify-style): `<header>: <prefix><hex or base64>`, an HMAC-SHA256 of
  the body alone keyed with the whole secret string; `X-Webhook-Id`. No timestamp is signed,
  so nothing stops a captured request from being replayed; `tolerance` does not apply, and
  `VerifiedWebhook.timestamp` is None. Deduplicating on the webhook id (the Django decorator
  does) turns such a replay into a "duplicate" for as long as the id is remembered.

`<header>` is X-Webhook-Signature unless given. With no scheme, public keys (`whpk_`) mean
`standard_ed25519`; with secrets, `standard` and `timestamped_hex` (with X-Webhook-Signature)
are told apart by their headers; `body_hmac` is never guessed, since accepting a signature
without a timestamp must be asked for.
"""

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import inputs
from .errors import InvalidSignatureError, MissingHeaderError

STANDARD = "standard"
TIMESTAMPED_HEX = "timestamped_hex"
BODY_HMAC = "body_hmac"
STANDARD_ED25519 = "standard_ed25519"
PUBLIC_KEY_PREFIX = "whpk_"

# Header names as we report them; looked up case-insensitively.
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
X_WEBHOOK_ID = "X-Webhook-Id"
X_WEBHOOK_TIMESTAMP = "X-Webhook-Timestamp"
X_WEBHOOK_SIGNATURE = "X-Webhook-Signature"
# What a signature header may not be called: the headers that carry the id and timestamp.
_NOT_SIGNATURE_HEADERS = {name.lower() for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, X_WEBHOOK_ID, X_WEBHOOK_TIMESTAMP)}

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_PREFIX_RE = re.compile(r"[\x21-\x7e]{0,32}")  # visible ASCII, no spaces
_HEX_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")
_SEPARATOR_RE = re.compile(r"[ \t]+")
_COMMA_RE = re.compile(r",")


@dataclass(frozen=True)
class SignatureFormat:
    """How a webhook is signed: the scheme and, where it has them, its header and encoding."""

    scheme: str
    header: str = X_WEBHOOK_SIGNATURE  # timestamped_hex, body_hmac
    encoding: str = "hex"  # body_hmac: "hex" or "base64"
    prefix: str = ""  # body_hmac: e.g. "sha256="


# The same names as the sender's presets (endpoints.signature_formats.SIGNATURE_PRESETS).
PRESETS: dict[str, SignatureFormat] = {
    "standard": SignatureFormat(STANDARD),
    "github": SignatureFormat(BODY_HMAC, header="X-Hub-Signature-256", encoding="hex", prefix="sha256="),
    "shopify": SignatureFormat(BODY_HMAC, header="X-Shopify-Hmac-Sha256", encoding="base64"),
    "stripe": SignatureFormat(TIMESTAMPED_HEX, header="Stripe-Signature"),
}

# Which of header=, encoding= and prefix= each scheme takes.
_OPTIONS = {
    STANDARD: (),
    TIMESTAMPED_HEX: ("header",),
    BODY_HMAC: ("header", "encoding", "prefix"),
    STANDARD_ED25519: (),
}


def signature_format(
    scheme: str | None = None,
    *,
    header: str | None = None,
    encoding: str | None = None,
    prefix: str | None = None,
    preset: str | None = None,
) -> SignatureFormat | None:
    """The format these arguments name; None (no scheme, no preset): told from the headers.

    Raises ValueError for an unknown scheme, preset or encoding, an option the scheme does not
    take, a preset combined with other options, or a header name or prefix that cannot be one.
    """
    options = {"header": header, "encoding": encoding, "prefix": prefix}
    given = [name for name, value in options.items() if value is not None]
    if preset is not None:
        if scheme is not None or given:
            raise ValueError("give preset= alone, or scheme= with header=, encoding=, prefix=; not both")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {inputs.shown(preset)}; known: {', '.join(PRESETS)}")
        return PRESETS[preset]
    if scheme is None:
        if given:
            raise ValueError(f"{'=, '.join(given)}= need scheme= ({TIMESTAMPED_HEX!r} or {BODY_HMAC!r}) or preset=")
        return None
    if scheme not in _OPTIONS:
        raise ValueError(f"unknown scheme {inputs.shown(scheme)}; known: {', '.join(_OPTIONS)}")
    for name in given:
        if name not in _OPTIONS[scheme]:
            raise ValueError(f"{name}= does not apply to the {scheme} scheme")
    if header is not None and (
        not isinstance(header, str) or not _HEADER_NAME_RE.fullmatch(header) or header.lower() in _NOT_SIGNATURE_HEADERS
    ):
        raise ValueError(f"header= must be an HTTP header name other than the id and timestamp headers; got {header!r}")
    if encoding is not None and (not isinstance(encoding, str) or encoding not in DECODERS):
        raise ValueError(f"encoding= must be one of {', '.join(DECODERS)}; got {inputs.shown(encoding)}")
    if prefix is not None and (not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix)):
        raise ValueError(f"prefix= must be up to 32 visible ASCII characters, e.g. 'sha256='; got {prefix!r}")
    return SignatureFormat(scheme, **{name: value for name, value in options.items() if value is not None})


def detected_format(headers: Mapping[str, str]) -> SignatureFormat:
    """`standard` or `timestamped_hex` (with X-Webhook-Signature), from the headers present."""
    found = inputs.find_headers(
        headers, (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE, X_WEBHOOK_ID, X_WEBHOOK_SIGNATURE)
    )
    if any(name in found for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE)):
        return PRESETS["standard"]
    if X_WEBHOOK_SIGNATURE in found:
        return SignatureFormat(TIMESTAMPED_HEX)
    if X_WEBHOOK_ID in found:
        raise MissingHeaderError(
            f"missing {X_WEBHOOK_SIGNATURE} header (for a signature in another header, pass scheme= and header=, "
            "or preset=)"
        )
    raise MissingHeaderError(
        "missing signature headers: expected webhook-id, webhook-timestamp and webhook-signature "
        "(Standard Webhooks) or X-Webhook-Signature (t=...,v1=...); for another format, pass scheme= or preset="
    )


def format_for_keys(secrets: list[str], chosen: SignatureFormat | None, headers: Mapping[str, str]) -> SignatureFormat:
    """The format to verify with `secrets`: public keys (`whpk_`) verify `standard_ed25519` and
    nothing else, secrets everything else; `chosen` (from scheme= or preset=) or, when None, told
    from the keys and headers. `ValueError` when the keys do not fit the scheme chosen."""
    public = [s.startswith(PUBLIC_KEY_PREFIX) for s in secrets]
    if any(public):
        if not all(public):
            raise ValueError(
                "give either public keys ('whpk_...', for v1a signatures) or secrets ('whsec_...', for v1), not both"
            )
        if chosen is not None and chosen.scheme != STANDARD_ED25519:
            raise ValueError(
                f"public keys ('whpk_...') verify only {STANDARD_ED25519} (v1a) signatures, not {chosen.scheme}: "
                "give the endpoint's secret, or no scheme"
            )
        return SignatureFormat(STANDARD_ED25519)
    if chosen is not None and chosen.scheme == STANDARD_ED25519:
        raise ValueError(
            f"the {STANDARD_ED25519} scheme verifies with the endpoint's public key ('whpk_...'), not a secret"
        )
    return chosen or detected_format(headers)


@dataclass(frozen=True)
class VerifiedWebhook:
    """What `verify_webhook` returns: the payload plus what the headers said about it."""

    id: str | None  # the webhook id, the same on every retry: the dedupe key (None: no id given at all)
    timestamp: int | None  # the signed unix timestamp of this attempt (None: body_hmac signs none)
    payload: dict[str, Any]  # the parsed JSON body
    scheme: str  # "standard", "timestamped_hex", "body_hmac" or "standard_ed25519" (v1a)
    secret_index: int  # which of the secrets (or public keys) given matched (0 = the first)


Verifier = Callable[[list[str], Mapping[str, str], bytes, float, float | None, SignatureFormat], VerifiedWebhook]


def _verify_standard(
    secrets: list[str], headers: Mapping[str, str], body: bytes, tolerance: float, now: float | None, _: SignatureFormat
) -> VerifiedWebhook:
    found = inputs.find_headers(headers, (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE))
    for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE):
        if not found.get(name):
            raise MissingHeaderError(f"missing {name} header")
    msg_id = inputs.webhook_id(found[WEBHOOK_ID], WEBHOOK_ID)
    raw_timestamp = found[WEBHOOK_TIMESTAMP]
    timestamp = inputs.timestamp(raw_timestamp, WEBHOOK_TIMESTAMP)
    entries = inputs.entries(found[WEBHOOK_SIGNATURE], WEBHOOK_SIGNATURE, _SEPARATOR_RE)

    candidates: list[bytes] = []
    malformed = 0
    other_versions = 0
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not comma:
            malformed += 1
        elif version != "v1":
            other_versions += 1  # v1a (ed25519), v2, ...: not ours to check
        elif (signature := inputs.b64decode(value)) is None or len(signature) != inputs.SHA256_SIZE:
            malformed += 1
        else:
            candidates.append(signature)
    inputs.no_candidates(candidates, WEBHOOK_SIGNATURE, malformed, other_versions)
    inputs.check_tolerance(timestamp, tolerance, now, WEBHOOK_TIMESTAMP)

    # The timestamp is signed exactly as the header carries it.
    signed = f"{msg_id}.{raw_timestamp}.".encode("ascii") + body
    for index, secret in enumerate(secrets):
        expected = hmac.new(inputs.standard_key(secret), signed, hashlib.sha256).digest()
        # compare_digest against every entry: no early exit on a near miss.
        if inputs.any_match(expected, candidates):
            return VerifiedWebhook(msg_id, timestamp, inputs.payload(body), STANDARD, index)
    raise InvalidSignatureError(inputs.no_match_message(WEBHOOK_SIGNATURE, len(candidates), len(secrets), malformed))


def _signature_and_id(headers: Mapping[str, str], name: str) -> tuple[str, str | None]:
    """The X-Webhook formats' signature header `name` (required) and X-Webhook-Id (optional:
    the id signed in the body is the one that counts, see _signed_id)."""
    found = inputs.find_headers(headers, (X_WEBHOOK_ID, name))
    if not found.get(name):
        raise MissingHeaderError(f"missing {name} header")
    header_id = inputs.webhook_id(found[X_WEBHOOK_ID], X_WEBHOOK_ID) if found.get(X_WEBHOOK_ID) else None
    return found[name], header_id


def _verify_timestamped_hex(
    secrets: list[str],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float,
    now: float | None,
    form: SignatureFormat,
) -> VerifiedWebhook:
    name = form.header
    signature, header_id = _signature_and_id(headers, name)
    entries = inputs.entries(signature, name, _COMMA_RE)

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
                raise InvalidSignatureError(f"{name} has more than one t= timestamp")
            raw_timestamp = value
        elif key != "v1":
            other_versions += 1
        elif _HEX_SIGNATURE_RE.fullmatch(value):
            candidates.append(bytes.fromhex(value))
        else:
            malformed += 1
    if raw_timestamp is None:
        raise InvalidSignatureError(
            f"{name} has no t= timestamp (if the endpoint signs the body alone, verify with scheme='body_hmac')"
        )
    timestamp = inputs.timestamp(raw_timestamp, f"{name} t=")
    inputs.no_candidates(candidates, name, malformed, other_versions)
    inputs.check_tolerance(timestamp, tolerance, now, f"{name} t=")

    signed = f"{raw_timestamp}.".encode("ascii") + body
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
        if inputs.any_match(expected, candidates):
            payload = inputs.payload(body)
            return VerifiedWebhook(_signed_id(header_id, payload), timestamp, payload, TIMESTAMPED_HEX, index)
    raise InvalidSignatureError(inputs.no_match_message(name, len(candidates), len(secrets), malformed))


def _hex_digest(value: str) -> bytes | None:
    return bytes.fromhex(value) if _HEX_SIGNATURE_RE.fullmatch(value) else None


def _base64_digest(value: str) -> bytes | None:
    digest = inputs.b64decode(value)
    return digest if digest is not None and len(digest) == inputs.SHA256_SIZE else None


DECODERS: dict[str, Callable[[str], bytes | None]] = {"hex": _hex_digest, "base64": _base64_digest}


def _verify_body_hmac(
    secrets: list[str],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float,
    now: float | None,
    form: SignatureFormat,
) -> VerifiedWebhook:
    # No timestamp is signed: `tolerance` and `now` have nothing to check (module docstring).
    name = form.header
    signature, header_id = _signature_and_id(headers, name)
    value = inputs.signature_value(signature, name)
    if not value.startswith(form.prefix):
        raise InvalidSignatureError(f"{name} does not start with {form.prefix!r}")
    signature = DECODERS[form.encoding](value[len(form.prefix) :])
    if signature is None:
        raise InvalidSignatureError(f"{name} is not a {form.encoding} HMAC-SHA256 ({form.prefix!r} then the digest)")

    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
        if hmac.compare_digest(expected, signature):
            payload = inputs.payload(body)
            return VerifiedWebhook(_signed_id(header_id, payload), None, payload, BODY_HMAC, index)
    secrets_phrase = "the secret" if len(secrets) == 1 else f"any of the {len(secrets)} secrets"
    raise InvalidSignatureError(
        f"the signature in {name} does not match {secrets_phrase}: a wrong secret, or a body changed after signing"
    )


def _signed_id(header_id: str | None, payload: dict[str, Any]) -> str | None:
    """The webhook id of a request whose signature does not cover X-Webhook-Id.

    A replayed request could carry any id there and slip past deduplication. Our bodies carry
    the same id, signed: when the body has a string `id`, the header must agree with it (and may
    be absent). None when neither gives an id: the signature is still good, but there is
    nothing to deduplicate on.
    """
    body_id = payload.get("id")
    if not isinstance(body_id, str) or not inputs.ID_RE.fullmatch(body_id) or len(body_id) > inputs.MAX_ID_LENGTH:
        body_id = None
    if header_id is not None and body_id is not None and not hmac.compare_digest(header_id, body_id):
        raise InvalidSignatureError(f"{X_WEBHOOK_ID} does not match the id in the signed body")
    return header_id or body_id


def _verify_v1a(
    public_keys: list[str],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float,
    now: float | None,
    form: SignatureFormat,
) -> VerifiedWebhook:
    from .ed25519 import verify_v1a  # needs `cryptography`: imported only for public keys

    return verify_v1a(public_keys, headers, body, tolerance, now, form)


VERIFIERS: dict[str, Verifier] = {
    STANDARD: _verify_standard,
    TIMESTAMPED_HEX: _verify_timestamped_hex,
    BODY_HMAC: _verify_body_hmac,
    STANDARD_ED25519: _verify_v1a,
}
