"""Checking an mTLS client certificate and its private key before they are stored.

A receiver that requires TLS client authentication gets one certificate chain (PEM, leaf
first) and its unencrypted private key (PEM) per endpoint. Both are checked here when saved,
so a send never finds out that the key does not belong to the certificate.
"""

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.core.exceptions import ValidationError

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
