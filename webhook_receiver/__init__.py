"""Verify the webhooks this project sends, on the receiving side, with the standard library only.

    from webhook_receiver import verify, WebhookVerificationError

    payload = verify(secret, request_headers, raw_body)   # the parsed JSON body, a dict
    payload = verify(secret, request_headers, raw_body, preset="github")
    payload = verify(secret, request_headers, raw_body, scheme="body_hmac",
                     header="X-Hub-Signature-256", encoding="hex", prefix="sha256=")

Every format our sender signs in is verified (webhook_receiver/formats.py):

- Standard Webhooks (the default): `webhook-id`, `webhook-timestamp` and
  `webhook-signature: v1,<base64> [v1,<base64> ...]`, an HMAC-SHA256 of "{id}.{timestamp}.{body}"
  keyed with the base64-decoded part of the secret after `whsec_`.
- Stripe-compatible (`timestamped_hex`): `X-Webhook-Signature` (or the `header=` given, e.g.
  `Stripe-Signature`): `t=<ts>,v1=<hex>[,v1=<hex>...]`, an HMAC-SHA256 of "{t}.{body}" keyed with
  the whole secret string, and `X-Webhook-Id`.
- Standard Webhooks with an ed25519 key pair (`standard_ed25519`): the same headers with
  `v1a,<base64>` entries, verified with the endpoint's public key (`whpk_...`) given instead of
  a secret (webhook_receiver/ed25519.py; needs `cryptography`, imported only then).
- Body HMAC (`body_hmac`, GitHub- and Shopify-style): `X-Webhook-Signature` (or `header=`):
  `<prefix><hex or base64>`, an HMAC-SHA256 of the body alone keyed with the whole secret string,
  and `X-Webhook-Id`. No timestamp is signed: no replay protection beyond deduplication.

Without `scheme=` or `preset=`, public keys mean `standard_ed25519`, and with secrets the first
two are told apart by their headers (as before);
`body_hmac` is only ever accepted when asked for. Presets by name: `standard`, `github`
(body_hmac, X-Hub-Signature-256, hex, `sha256=`), `shopify` (body_hmac, X-Shopify-Hmac-Sha256,
base64) and `stripe` (timestamped_hex, Stripe-Signature).

A request is accepted when a `v1` signature matches a secret, or a `v1a` one a public key
(entries of other versions are ignored) and its signed timestamp is within `tolerance` seconds of now, in either
direction. Every rejection raises a subclass of `WebhookVerificationError` whose message says
what is wrong; malformed input of any kind never raises anything else. A misconfigured secret
(not a `str`, empty, not base64 after `whsec_`), a `tolerance` that is not an int or float from
0 to `MAX_TOLERANCE` (one day; not NaN), or a format that does not exist (an unknown scheme,
preset or encoding, an option the scheme does not take) is a programming error: `ValueError`.

This package (all but `webhook_receiver.django`, and `webhook_receiver.ed25519` for public keys)
depends on nothing but the Python standard library; copy it into any project.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import (
    InvalidPayloadError,
    InvalidSignatureError,
    MissingHeaderError,
    TimestampOutsideToleranceError,
    WebhookVerificationError,
)
from .formats import (
    BODY_HMAC,
    PRESETS,
    PUBLIC_KEY_PREFIX,
    STANDARD,
    STANDARD_ED25519,
    TIMESTAMPED_HEX,
    VERIFIERS,
    WEBHOOK_ID,
    WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
    X_WEBHOOK_ID,
    X_WEBHOOK_SIGNATURE,
    X_WEBHOOK_TIMESTAMP,
    SignatureFormat,
    VerifiedWebhook,
    format_for_keys,
    signature_format,
)
from .inputs import (
    DEFAULT_TOLERANCE,
    MAX_TOLERANCE,
    SECRET_PREFIX,
    body_bytes,
    secret_list,
    validate_now,
    validate_tolerance,
)

__all__ = [
    "BODY_HMAC",
    "DEFAULT_TOLERANCE",
    "MAX_TOLERANCE",
    "PRESETS",
    "PUBLIC_KEY_PREFIX",
    "SECRET_PREFIX",
    "STANDARD",
    "STANDARD_ED25519",
    "TIMESTAMPED_HEX",
    "WEBHOOK_ID",
    "WEBHOOK_SIGNATURE",
    "WEBHOOK_TIMESTAMP",
    "X_WEBHOOK_ID",
    "X_WEBHOOK_SIGNATURE",
    "X_WEBHOOK_TIMESTAMP",
    "InvalidPayloadError",
    "InvalidSignatureError",
    "MissingHeaderError",
    "SignatureFormat",
    "TimestampOutsideToleranceError",
    "VerifiedWebhook",
    "WebhookVerificationError",
    "signature_format",
    "validate_tolerance",
    "verify",
    "verify_webhook",
]


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
    scheme: str | None = None,
    header: str | None = None,
    encoding: str | None = None,
    prefix: str | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """Verify a webhook request and return its parsed JSON body.

    `secret` is the endpoint's secret (`whsec_...`), or several (during a rotation on the
    receiving side: the request is accepted if any of them signed it; the first that matches
    wins); for an endpoint that signs with ed25519, its public key(s) (`whpk_...`) instead.
    `headers` is any mapping of the request headers (names in any case; anything with
    `.items()`, such as Django's `request.headers` or `http.server`'s `self.headers`). `body`
    is the raw request body, exactly as received. `tolerance` is how many seconds the signed
    timestamp may differ from `now` (default: the current time) in either direction, at most
    `MAX_TOLERANCE` (one day); body_hmac signs no timestamp, so it has nothing to check there.

    The format: `preset` (`standard`, `github`, `shopify`, `stripe`), or `scheme` (`standard`,
    `timestamped_hex`, `body_hmac`, `standard_ed25519`) with, where the scheme takes them,
    `header` (the signature header's name; default X-Webhook-Signature), `encoding` (body_hmac:
    `hex`, the default, or `base64`) and `prefix` (body_hmac: e.g. `sha256=`). Neither: with
    public keys, standard_ed25519; with secrets, Standard Webhooks or timestamped_hex, told from
    the headers.

    Raises a `WebhookVerificationError` subclass when the request must be rejected.
    """
    return verify_webhook(
        secret,
        headers,
        body,
        tolerance,
        now=now,
        scheme=scheme,
        header=header,
        encoding=encoding,
        prefix=prefix,
        preset=preset,
    ).payload


def verify_webhook(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
    scheme: str | None = None,
    header: str | None = None,
    encoding: str | None = None,
    prefix: str | None = None,
    preset: str | None = None,
) -> VerifiedWebhook:
    """Like `verify`, but return the webhook id, timestamp, scheme and matching secret too."""
    secrets = secret_list(secret)
    validate_tolerance(tolerance)
    validate_now(now)
    chosen = signature_format(scheme, header=header, encoding=encoding, prefix=prefix, preset=preset)
    form = format_for_keys(secrets, chosen, headers)
    return VERIFIERS[form.scheme](secrets, headers, body_bytes(body), tolerance, now, form)
