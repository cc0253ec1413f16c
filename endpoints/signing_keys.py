"""Ed25519 key pairs for Standard Webhooks asymmetric signatures (`webhook-signature: v1a,...`).

An endpoint with `signature_scheme="standard_ed25519"` signs with a private key that never leaves
the sender; its receiver verifies with the public key, so a leak on the receiving side cannot
forge webhooks. The spec names the forms (`whsk_` private, `whpk_` public, "base64 encoded") but
not the bytes; we write them as Svix does (svix-server, `EndpointSecretType::Ed25519`), so keys
move between the two:

- private key: `whsk_` + base64 of the 64-byte ed25519 secret key, i.e. the 32-byte seed followed
  by its 32-byte public key (the NaCl / libsodium layout);
- public key: `whpk_` + base64 of the 32 raw public key bytes.

The private key is stored encrypted like a shared secret (it is an EndpointSecret value).
"""

import base64
import binascii
import secrets as random_secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.exceptions import ValidationError

__all__ = [
    "PRIVATE_KEY_PREFIX",
    "PUBLIC_KEY_PREFIX",
    "generate_private_key",
    "is_private_key",
    "load_private_key",
    "public_key_of",
    "validate_private_key",
]

PRIVATE_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
SEED_BYTES = 32
SECRET_KEY_BYTES = 64  # seed + public key

FORM = (
    "'whsk_' followed by base64 of 64 bytes: the 32-byte ed25519 seed, then its 32-byte public key "
    "(as generated here or by Svix)"
)


def _raw_public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def generate_private_key() -> str:
    """A new ed25519 private key, `whsk_` + base64 of seed and public key (64 bytes)."""
    seed = random_secrets.token_bytes(SEED_BYTES)
    return PRIVATE_KEY_PREFIX + base64.b64encode(seed + _raw_public_key(seed)).decode("ascii")


def is_private_key(value: object) -> bool:
    """Whether `value` is written as an ed25519 private key (`whsk_...`), well formed or not."""
    return isinstance(value, str) and value.startswith(PRIVATE_KEY_PREFIX)


def _key_bytes(value: object) -> bytes:
    """The 64 bytes of a well-formed private key; ValidationError (never quoting it) otherwise."""
    if isinstance(value, str) and value.startswith(PUBLIC_KEY_PREFIX):
        raise ValidationError(
            f"That is a public key ('whpk_'): the sender signs with the private key, {FORM}; the public key "
            "is what the receiver verifies with.",
            code="secret",
        )
    if not is_private_key(value):
        raise ValidationError(f"An ed25519 private key must be {FORM}.", code="secret")
    try:
        raw = base64.b64decode(value[len(PRIVATE_KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"An ed25519 private key must be {FORM}; this is not base64.", code="secret") from None
    if len(raw) != SECRET_KEY_BYTES:
        raise ValidationError(f"An ed25519 private key must be {FORM}; this encodes {len(raw)} bytes.", code="secret")
    if raw[SEED_BYTES:] != _raw_public_key(raw[:SEED_BYTES]):
        raise ValidationError(
            f"An ed25519 private key must be {FORM}; its last 32 bytes are not the public key of its seed "
            "(a damaged or mixed-up key).",
            code="secret",
        )
    return raw


def validate_private_key(value: object) -> None:
    """Raise ValidationError unless `value` is a well-formed `whsk_` private key."""
    _key_bytes(value)


def load_private_key(value: str) -> Ed25519PrivateKey:
    """The signing key of a `whsk_` private key that was validated when stored (its seed only:
    checking the public half again would double the cost of every signature)."""
    seed = base64.b64decode(value[len(PRIVATE_KEY_PREFIX) :])[:SEED_BYTES]
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_of(value: str) -> str:
    """The `whpk_...` public key of a (valid) `whsk_` private key: what the receiver verifies with."""
    return PUBLIC_KEY_PREFIX + base64.b64encode(_key_bytes(value)[SEED_BYTES:]).decode("ascii")
