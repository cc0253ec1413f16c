"""Signatures over the exact body bytes, in the two schemes an endpoint can choose.

Standard Webhooks (default): `webhook-signature: v1,<base64 HMAC-SHA256>` of
"{id}.{timestamp}.{body}", keyed with the base64-decoded part of the secret after `whsec_`;
one space-separated entry per live secret during a rotation.

Timestamped hex (Stripe-compatible): `X-Webhook-Signature: t=<ts>,v1=<hex>,...` of
"{ts}.{body}", keyed with the whole secret string; one `v1=` per live secret.
"""

import base64
import hashlib
import hmac
from collections.abc import Sequence

from endpoints.models import SECRET_PREFIX, SignatureScheme


def standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign_standard(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,<base64>` entry per secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(standard_key(s), signed, hashlib.sha256).digest()).decode() for s in secrets
    )


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
            "X-Webhook-Signature": sign_timestamped_hex(secrets, timestamp, body),
        }
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secrets, msg_id, timestamp, body),
    }
