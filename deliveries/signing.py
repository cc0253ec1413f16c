"""Signatures over the exact body bytes, in the schemes an endpoint can choose.

Standard Webhooks (default): `webhook-signature: v1,<base64 HMAC-SHA256>` of
"{id}.{timestamp}.{body}", keyed with the base64-decoded part of the secret after `whsec_`;
one space-separated entry per live secret during a rotation.

Standard Webhooks with an ed25519 key pair (`standard_ed25519`): the same header and signed
content, with a `v1a,<base64 ed25519 signature>` entry per live private key (`whsk_`). The
header carries each live key in its own form, so after a switch between the two schemes `v1`
and `v1a` entries go side by side until the older keys expire (as Svix does; the spec's example
header mixes them too).

Timestamped hex (Stripe-compatible): `X-Webhook-Signature: t=<ts>,v1=<hex>,...` of
"{ts}.{body}", keyed with the whole secret string; one `v1=` per live secret.
"""

import base64
import hashlib
import hmac
from collections.abc import Sequence

from endpoints.models import SECRET_PREFIX, SignatureScheme
from endpoints.signing_keys import is_private_key, load_private_key


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


def signature_headers(scheme: str, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The identifying and signing headers of one request in `scheme`."""
    if scheme == SignatureScheme.TIMESTAMPED_HEX:
        return {
            "X-Webhook-Id": msg_id,
            "X-Webhook-Timestamp": str(timestamp),
            "X-Webhook-Signature": sign_timestamped_hex(shared_secrets(secrets), timestamp, body),
        }
    # standard and standard_ed25519: one header, each key in its own form (v1 / v1a)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secrets, msg_id, timestamp, body),
    }
