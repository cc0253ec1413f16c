"""mTLS client certificates: the model, and the checks of a certificate and its private key
before they are stored.

A receiver that requires TLS client authentication gets one certificate chain (PEM, leaf
first) and its unencrypted private key (PEM) per endpoint. Both are checked here when saved,
so a send never finds out that the key does not belong to the certificate.
"""

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from . import secret_box

MAX_PEM_LENGTH = 64 * 1024


@dataclass(frozen=True)
class CertificateInfo:
    fingerprint_sha256: str
    subject: str
    not_valid_after: datetime.datetime


def _pem_text(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"The client {what} must be PEM text.", code="client_certificate")
    if len(value) > MAX_PEM_LENGTH:
        raise ValidationError(
            f"The client {what} is longer than {MAX_PEM_LENGTH} characters.", code="client_certificate"
        )
    if not value.isascii():
        raise ValidationError(f"The client {what} must be ASCII PEM text.", code="client_certificate")
    return value.encode("ascii")


def inspect_client_certificate(certificate_pem: str, private_key_pem: str, now: datetime.datetime) -> CertificateInfo:
    """Check that the chain parses, the leaf is valid now and the key is its key; describe it.

    Raises ValidationError saying what is wrong (never quoting the key).
    """
    try:
        chain = x509.load_pem_x509_certificates(_pem_text(certificate_pem, "certificate"))
    except ValueError:
        raise ValidationError(
            "The client certificate is not a PEM certificate chain (-----BEGIN CERTIFICATE-----).",
            code="client_certificate",
        ) from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(_pem_text(private_key_pem, "private key"), password=None)
    except TypeError:
        raise ValidationError(
            "The client private key is protected by a passphrase; store it unencrypted (it is "
            "encrypted at rest with WEBHOOKS_SECRET_KEYS).",
            code="client_certificate",
        ) from None
    except (ValueError, UnicodeError):
        raise ValidationError(
            "The client private key is not a PEM private key (-----BEGIN PRIVATE KEY-----).",
            code="client_certificate",
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != leaf.public_key().public_bytes(encoding, public):
        raise ValidationError(
            "The client private key does not belong to the certificate (the first in the chain).",
            code="client_certificate",
        )
    if leaf.not_valid_after_utc <= now:
        raise ValidationError(
            f"The client certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC.",
            code="client_certificate",
        )
    if leaf.not_valid_before_utc > now:
        raise ValidationError(
            f"The client certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC.",
            code="client_certificate",
        )
    return CertificateInfo(
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        subject=leaf.subject.rfc4514_string()[:200],
        not_valid_after=leaf.not_valid_after_utc,
    )


class EndpointClientCertificate(models.Model):
    """The TLS client certificate an endpoint presents to a receiver that requires one (mTLS).

    `certificate_pem` (the chain, leaf first) is public and kept as is; the private key is
    stored encrypted like a secret (`encrypted_private_key`; read and write it as
    `private_key_pem`). Saving checks that the key belongs to the certificate and that the
    certificate is valid now. Set it with `endpoint.set_client_certificate(cert_pem, key_pem)`.
    """

    endpoint = models.OneToOneField("endpoints.Endpoint", on_delete=models.CASCADE, related_name="client_certificate")
    certificate_pem = models.TextField(help_text="PEM certificate chain, leaf first.")
    encrypted_private_key = models.TextField(editable=False)
    fingerprint_sha256 = models.CharField(max_length=64, editable=False)
    subject = models.CharField(max_length=200, editable=False)
    not_valid_after = models.DateTimeField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __init__(self, *args, **kwargs):
        private_key_pem = kwargs.pop("private_key_pem", None)
        super().__init__(*args, **kwargs)
        self._new_private_key = private_key_pem

    def __str__(self) -> str:
        return (
            f"client certificate of endpoint {self.endpoint_id} ({self.subject}, sha256 {self.fingerprint_sha256[:16]})"
        )

    def __repr__(self) -> str:
        return f"<EndpointClientCertificate {self.pk} of endpoint {self.endpoint_id}>"

    def save(self, *args, **kwargs) -> None:
        key = self.private_key_pem
        info = inspect_client_certificate(self.certificate_pem, key, timezone.now())
        self.fingerprint_sha256, self.subject, self.not_valid_after = (
            info.fingerprint_sha256,
            info.subject,
            info.not_valid_after,
        )
        if self._new_private_key is not None:
            self.encrypted_private_key = secret_box.encrypt(self._new_private_key)
            self._new_private_key = None
        super().save(*args, **kwargs)

    @property
    def private_key_pem(self) -> str:
        if self._new_private_key is not None:
            return self._new_private_key
        return secret_box.decrypt(self.encrypted_private_key, f"the client key of endpoint {self.endpoint_id}")

    @private_key_pem.setter
    def private_key_pem(self, value: str) -> None:
        self._new_private_key = value
