"""Signatures over the exact body bytes, in the format each endpoint chose.

`SIGNERS` maps each signature scheme to the function that makes its headers: a new format is
one entry and one function, and a scheme without an entry is an error
(`UnknownSignatureScheme`), never a silent fallback to another format. Every format sends the
webhook id and the attempt's timestamp too.

- `standard`, Standard Webhooks (default): `webhook-id`, `webhook-timestamp` and
  `webhook-signature: v1,<base64 HMAC-SHA256>` of "{id}.{timestamp}.{body}", keyed with the
  base64-decoded part of the secret after `whsec_`; one space-separated entry per live secret
  during a rotation.
- `standard_ed25519`, Standard Webhooks with an ed25519 key pair: the same headers and signed
  content, with a `v1a,<base64 ed25519 signature>` entry per live private key (`whsk_`). Both
  Standard Webhooks schemes share one signer, which writes each live key in its own form, so
  after a switch between them `v1` and `v1a` entries go side by side until the older keys
  expire (as Svix does; the spec's example header mixes them too).
- `timestamped_hex` (Stripe-compatible): `X-Webhook-Id`, `X-Webhook-Timestamp` and
  `<header>: t=<ts>,v1=<hex>,...` of "{ts}.{body}", keyed with the whole secret string; one
  `v1=` per live secret.
- `body_hmac` (GitHub-, Shopify-style): `X-Webhook-Id`, `X-Webhook-Timestamp` (neither signed)
  and `<header>: <prefix><hex or base64 HMAC-SHA256 of the body>`, keyed with the whole secret
  string. Receivers of this form read one signature, so during a rotation one secret signs:
  the OLDEST live one, until it expires, then the next. A receiver holding one secret switches
  at the expiry time its operator was shown; switching early or late by minutes only delays
  (the retries carry the webhook through), and with both secrets it never fails. Signing with
  the newest at once would fail every receiver from the rotation until it switched, at a time
  it cannot know in advance. A leaked secret is rotated with grace 0: it expires at once.

The HMAC-only formats (`timestamped_hex`, `body_hmac`) sign with the shared secrets (`whsec_`)
alone: an ed25519 private key left live by a switch of scheme signs nothing there, and is never
used as an HMAC key. `<header>` is the endpoint's `signature_header` (blank: X-Webhook-Signature).
"""

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from endpoints.models import SECRET_PREFIX, Endpoint, SignatureScheme
from endpoints.signature_formats import DEFAULT_SIGNATURE_HEADER, SignatureEncoding
from endpoints.signing_keys import is_private_key, load_private_key

__all__ = [
    "ENCODERS",
    "SIGNERS",
    "SignatureOptions",
    "SigningError",
    "UnknownSignatureScheme",
    "endpoint_signature_headers",
    "shared_secrets",
    "sign_body",
    "sign_standard",
    "sign_timestamped_hex",
    "sign_v1a",
    "signature_headers",
]


class SigningError(ValueError):
    """The endpoint cannot sign in its format. Nothing is sent: the attempt is recorded as failed
    (not retried) with this message, and an operator retries the delivery once it is fixed."""


class UnknownSignatureScheme(SigningError):
    """A signature scheme or encoding that no signer knows (the endpoint row was written
    behind validation's back, or a scheme was added without its signer)."""


def _signing_keys(secrets: Sequence[str], scheme: str) -> Sequence[str]:
    """`secrets`, refused when empty: a request without a signature must never be sent."""
    if not secrets:
        raise SigningError(f"no live secret or key that signs in the {scheme} format")
    return secrets


@dataclass(frozen=True)
class SignatureOptions:
    """An endpoint's signature settings; blank means the format's default."""

    header: str = ""  # timestamped_hex, body_hmac: blank is X-Webhook-Signature
    encoding: str = ""  # body_hmac: hex or base64; blank is hex
    prefix: str = ""  # body_hmac: e.g. "sha256="

    @property
    def header_name(self) -> str:
        return self.header or DEFAULT_SIGNATURE_HEADER


def standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign_standard(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,<base64>` entry per secret (`v1a,` for an
    ed25519 private key, see sign_v1a)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        sign_v1a(s, signed)
        if is_private_key(s)
        else "v1," + base64.b64encode(hmac.new(standard_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets
    )


def sign_v1a(private_key: str, signed: bytes) -> str:
    """One Standard Webhooks asymmetric entry: `v1a,` + base64 of the ed25519 signature (64
    bytes) of the signed content "{id}.{timestamp}.{body}", by a `whsk_` private key."""
    return "v1a," + base64.b64encode(load_private_key(private_key).sign(signed)).decode()


def shared_secrets(secrets: Sequence[str]) -> list[str]:
    """The `whsec_` secrets among `secrets`: the formats other than Standard Webhooks carry only
    HMAC signatures (an ed25519 key left from before a switch of scheme signs nothing there)."""
    return [s for s in secrets if not is_private_key(s)]


def sign_timestamped_hex(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The `X-Webhook-Signature` header value: `t=<ts>` then one `v1=<hex>` per secret."""
    signed = f"{timestamp}.".encode() + body
    signatures = (hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets)
    return ",".join([f"t={timestamp}", *(f"v1={sig}" for sig in signatures)])


ENCODERS: dict[str, Callable[[bytes], str]] = {
    SignatureEncoding.HEX: bytes.hex,
    SignatureEncoding.BASE64: lambda digest: base64.b64encode(digest).decode("ascii"),
}


def sign_body(secret: str, body: bytes, encoding: str = "", prefix: str = "") -> str:
    """The body_hmac header value: `prefix` + the HMAC-SHA256 of `body` keyed with the whole
    secret string, in `encoding` (blank: hex)."""
    encoder = ENCODERS.get(encoding or SignatureEncoding.HEX)
    if encoder is None:
        raise UnknownSignatureScheme(f"unknown signature encoding {encoding!r}; known: {', '.join(ENCODERS)}")
    return prefix + encoder(hmac.new(secret.encode(), body, hashlib.sha256).digest())


def _standard_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, options: SignatureOptions
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(_signing_keys(secrets, "standard"), msg_id, timestamp, body),
    }


def _timestamped_hex_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, options: SignatureOptions
) -> dict[str, str]:
    return {
        "X-Webhook-Id": msg_id,
        "X-Webhook-Timestamp": str(timestamp),
        options.header_name: sign_timestamped_hex(
            _signing_keys(shared_secrets(secrets), "timestamped_hex"), timestamp, body
        ),
    }


def _body_hmac_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, options: SignatureOptions
) -> dict[str, str]:
    # `secrets` is newest first: the oldest live shared secret signs (see the module docstring).
    return {
        "X-Webhook-Id": msg_id,
        "X-Webhook-Timestamp": str(timestamp),
        options.header_name: sign_body(
            _signing_keys(shared_secrets(secrets), "body_hmac")[-1], body, options.encoding, options.prefix
        ),
    }


Signer = Callable[[Sequence[str], str, int, bytes, SignatureOptions], dict[str, str]]

SIGNERS: dict[str, Signer] = {
    SignatureScheme.STANDARD: _standard_headers,
    # v1 for whsec_ secrets, v1a for whsk_ keys: one signer for both Standard Webhooks schemes
    SignatureScheme.STANDARD_ED25519: _standard_headers,
    SignatureScheme.TIMESTAMPED_HEX: _timestamped_hex_headers,
    SignatureScheme.BODY_HMAC: _body_hmac_headers,
}


def signature_headers(
    scheme: str,
    secrets: Sequence[str],
    msg_id: str,
    timestamp: int,
    body: bytes,
    *,
    header: str = "",
    encoding: str = "",
    prefix: str = "",
) -> dict[str, str]:
    """The identifying and signing headers of one request in `scheme`, signed with `secrets`
    (the live secrets, newest first). Raises UnknownSignatureScheme for a scheme or encoding
    no signer knows."""
    signer = SIGNERS.get(scheme)
    if signer is None:
        raise UnknownSignatureScheme(f"unknown signature scheme {scheme!r}; known: {', '.join(SIGNERS)}")
    return signer(secrets, msg_id, timestamp, body, SignatureOptions(header, encoding, prefix))


def endpoint_signature_headers(
    endpoint: Endpoint, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """`signature_headers` in the format and with the settings `endpoint` chose."""
    return signature_headers(
        endpoint.signature_scheme,
        secrets,
        msg_id,
        timestamp,
        body,
        header=endpoint.signature_header,
        encoding=endpoint.signature_encoding,
        prefix=endpoint.signature_prefix,
    )
