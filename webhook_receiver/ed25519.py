"""Verify Standard Webhooks asymmetric signatures (`webhook-signature: v1a,<base64>`) with the
endpoint's public key (`whpk_...`).

    payload = verify("whpk_...", request_headers, raw_body)

`verify` comes here when it is given public keys (VERIFIERS["standard_ed25519"] in
formats.py): the signed content is the same "{id}.{timestamp}.{body}" as for `v1`, signed with
ed25519 by a private key only the sender holds, so a key leaked on the receiving side cannot
forge webhooks. A public key is `whpk_` + base64 of its 32 bytes (padding optional). Entries
of other versions (`v1`) are not checked.

This needs the `cryptography` package, imported only here, so everything else in
webhook_receiver keeps to the standard library.
"""

from collections.abc import Mapping, Sequence

from . import inputs
from .errors import InvalidSignatureError, MissingHeaderError
from .formats import (
    _SEPARATOR_RE,
    PUBLIC_KEY_PREFIX,
    STANDARD_ED25519,
    WEBHOOK_ID,
    WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
    SignatureFormat,
    VerifiedWebhook,
)

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "verifying v1a (ed25519) signatures with a 'whpk_' public key needs the 'cryptography' package "
        "(pip install cryptography); verifying 'whsec_' secrets needs only the standard library"
    ) from None

__all__ = ["PUBLIC_KEY_PREFIX", "STANDARD_ED25519", "verify_v1a"]

_PUBLIC_KEY_SIZE = 32
_SIGNATURE_SIZE = 64


def _public_key(key: str) -> Ed25519PublicKey:
    encoded = key.removeprefix(PUBLIC_KEY_PREFIX).rstrip("=")
    raw = inputs.b64decode(encoded + "=" * (-len(encoded) % 4))
    if raw is None or len(raw) != _PUBLIC_KEY_SIZE:
        raise ValueError("a Standard Webhooks public key must be 'whpk_' followed by base64 of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_v1a(
    public_keys: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float,
    now: float | None,
    _: SignatureFormat | None = None,
) -> VerifiedWebhook:
    """Check the `v1a` entries of the Standard Webhooks `headers` against each of `public_keys`;
    the first that matches wins. A verifier of formats.VERIFIERS (the format has no options)."""
    if not all(key.startswith(PUBLIC_KEY_PREFIX) for key in public_keys):
        raise ValueError(
            "give either public keys ('whpk_...', for v1a signatures) or secrets ('whsec_...', for v1), not both"
        )
    keys = [_public_key(key) for key in public_keys]
    found = inputs.find_headers(headers, (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE))
    for name in (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE):
        if not found.get(name):
            raise MissingHeaderError(f"missing {name} header (v1a signatures come in the Standard Webhooks headers)")
    msg_id = inputs.webhook_id(found[WEBHOOK_ID], WEBHOOK_ID)
    raw_timestamp = found[WEBHOOK_TIMESTAMP]
    timestamp = inputs.timestamp(raw_timestamp, WEBHOOK_TIMESTAMP)

    candidates: list[bytes] = []
    malformed = 0
    for entry in inputs.entries(found[WEBHOOK_SIGNATURE], WEBHOOK_SIGNATURE, _SEPARATOR_RE):
        version, comma, value = entry.partition(",")
        if not comma:
            malformed += 1
        elif version != "v1a":
            continue  # v1 (HMAC), v2, ...: not checked with a public key
        elif (signature := inputs.b64decode(value)) is None or len(signature) != _SIGNATURE_SIZE:
            malformed += 1
        else:
            candidates.append(signature)
    if not candidates:
        extra = f" ({malformed} malformed)" if malformed else ""
        raise InvalidSignatureError(f"{WEBHOOK_SIGNATURE} has no well-formed v1a (ed25519) signature{extra}")
    inputs.check_tolerance(timestamp, tolerance, now, WEBHOOK_TIMESTAMP)

    # The timestamp is signed exactly as the header carries it.
    signed = f"{msg_id}.{raw_timestamp}.".encode("ascii") + body
    for index, key in enumerate(keys):
        for signature in candidates:
            try:
                key.verify(signature, signed)
            except InvalidSignature:
                continue
            return VerifiedWebhook(msg_id, timestamp, inputs.payload(body), STANDARD_ED25519, index)
    which = "the public key" if len(keys) == 1 else f"any of the {len(keys)} public keys"
    raise InvalidSignatureError(
        f"no v1a signature in {WEBHOOK_SIGNATURE} matches {which} ({len(candidates)} checked): "
        "a wrong public key, or a body changed after signing"
    )
