"""Signing secrets of endpoints: the EndpointSecret model, and how a secret is made and checked.

A secret is a shared HMAC secret (`whsec_` + base64 of 24 to 64 bytes, Standard Webhooks form)
or, for `signature_scheme="standard_ed25519"`, an ed25519 private key (`whsk_...`,
endpoints/signing_keys.py). Both are stored encrypted. Re-exported by endpoints.models, where
the rest of the app and host code import them from.
"""

import base64
import binascii
import secrets as random_secrets

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import secret_box
from .signature_formats import SignatureScheme
from .signing_keys import generate_private_key, is_private_key, public_key_of, validate_private_key

__all__ = [
    "SECRET_BYTES",
    "SECRET_PREFIX",
    "EndpointSecret",
    "EndpointSecretQuerySet",
    "generate_secret",
    "validate_secret",
]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def generate_secret(scheme: str | None = None) -> str:
    """A new signing secret for `scheme`: an ed25519 private key `whsk_...` for standard_ed25519,
    else `whsec_` + base64 of 32 random bytes (Standard Webhooks form)."""
    if scheme == SignatureScheme.STANDARD_ED25519:
        return generate_private_key()
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def validate_secret(value: str, scheme: str | None = None) -> None:
    """A secret is `whsec_` followed by base64 of 24 to 64 bytes, or an ed25519 private key
    `whsk_...` (endpoints/signing_keys.py). With `scheme`, it must be the kind that scheme signs
    with: a private key for standard_ed25519, a `whsec_` secret for the others."""
    if scheme is not None:
        _check_key_kind(value, scheme)
    if is_private_key(value):
        validate_private_key(value)
        return
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ValidationError("Secret must start with 'whsec_'.", code="secret")
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("Secret must be 'whsec_' followed by base64.", code="secret") from None
    if not 24 <= len(key) <= 64:
        raise ValidationError("Secret must encode 24 to 64 random bytes.", code="secret")


def _check_key_kind(value: object, scheme: str) -> None:
    if not isinstance(value, str):
        return  # validate_secret says what is wrong
    if scheme == SignatureScheme.STANDARD_ED25519 and not is_private_key(value):
        raise ValidationError(
            "Endpoints with signature_scheme 'standard_ed25519' sign with an ed25519 key pair: give its private "
            "key ('whsk_...'), or none to have one generated; not a shared secret or a public key.",
            code="secret",
        )
    if scheme != SignatureScheme.STANDARD_ED25519 and is_private_key(value):
        raise ValidationError(
            f"Endpoints with signature_scheme {scheme!r} sign with a shared secret ('whsec_...'); an ed25519 "
            "private key ('whsk_...') needs signature_scheme 'standard_ed25519'.",
            code="secret",
        )


class EndpointSecretQuerySet(models.QuerySet):
    """Secrets of endpoints; `live()` are those that sign now."""

    def live(self, now=None):
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).order_by("-created_at", "-id")


class EndpointSecret(models.Model):
    """A signing secret of an endpoint. The newest signs; older ones sign too until they expire
    (rotation with overlap: the signature header then carries one signature per live secret).

    Stored encrypted (endpoints/secret_box.py): `encrypted_secret` holds a Fernet token under
    WEBHOOKS_SECRET_KEYS; `secret` reads and writes the plain `whsec_...` value, so
    `EndpointSecret(secret="whsec_...")` and `.secret` work as if it were a column. It cannot be
    used in queries (`filter(secret=...)`): each encryption of one value differs. An ed25519
    private key (`whsk_...`) is stored the same way; its public key is kept in the clear in
    `public_key`, since the receiver, the admin and anyone may see it.
    """

    endpoint = models.ForeignKey("endpoints.Endpoint", on_delete=models.CASCADE, related_name="secrets")
    encrypted_secret = models.TextField(editable=False)
    public_key = models.CharField(
        max_length=60,
        blank=True,
        default="",
        editable=False,
        help_text="For an ed25519 key: its public key (whpk_...), which receivers verify with; empty for a "
        "shared secret.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = EndpointSecretQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["endpoint", "expires_at"], name="secret_endpoint_expiry")]

    def __str__(self) -> str:
        created = f" created {self.created_at:%Y-%m-%d %H:%M}" if self.created_at else ""
        return f"secret of endpoint {self.endpoint_id}{created}"

    def __repr__(self) -> str:
        return f"<EndpointSecret {self.pk} of endpoint {self.endpoint_id}>"

    @property
    def secret(self) -> str:
        """The plain `whsec_...` (or `whsk_...`) value (decrypted once per token)."""
        cached = getattr(self, "_plain", None)
        if cached is not None and cached[0] == self.encrypted_secret:
            return cached[1]
        plain = secret_box.decrypt(self.encrypted_secret, f"the secret {self.pk} of endpoint {self.endpoint_id}")
        self._plain = (self.encrypted_secret, plain)
        return plain

    @secret.setter
    def secret(self, value: str) -> None:
        validate_secret(value)
        self.encrypted_secret = secret_box.encrypt(value)
        self.public_key = public_key_of(value) if is_private_key(value) else ""
        self._plain = (self.encrypted_secret, value)
