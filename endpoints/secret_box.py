"""Encryption at rest for what proves our identity: signing secrets and mTLS client keys.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under the
keys of WEBHOOKS_SECRET_KEYS, a comma-separated list of `Fernet.generate_key()` values. The
first key encrypts; every key decrypts (MultiFernet). To rotate: put a new key first, restart,
run `manage.py reencrypt_secrets`, and drop the old key once it reports nothing left under it.

Without keys, DEBUG falls back to a key derived from SECRET_KEY. That is for development only:
the quick-start SECRET_KEY is published in the repository, so that key protects nothing.
Outside DEBUG nothing is encrypted or decrypted without a configured key: the system check
webhooks.E010 stops start-up, and any use raises SecretKeyError.
"""

import base64
import binascii
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .app_settings import webhook_settings

GENERATE_HINT = (
    'generate one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class SecretKeyError(ImproperlyConfigured):
    """No usable WEBHOOKS_SECRET_KEYS, or none of them opens a stored value."""


def configured_keys() -> list[str]:
    """WEBHOOKS_SECRET_KEYS as a list (the setting may be a list or a comma-separated string)."""
    value = webhook_settings.SECRET_KEYS or []
    if isinstance(value, str):
        value = value.split(",")
    return [key.strip() for key in value if isinstance(key, str) and key.strip()]


def key_errors() -> list[str]:
    """What is wrong with each configured key (nothing is ever said about the key itself)."""
    errors = []
    for position, key in enumerate(configured_keys(), start=1):
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            errors.append(f"key {position} of WEBHOOKS_SECRET_KEYS is not a Fernet key (32 url-safe base64 bytes)")
    return errors


def development_key() -> str:
    """The DEBUG-only fallback: derived from SECRET_KEY, so as secret as that (i.e. not at all
    with the quick-start default)."""
    digest = hashlib.sha256(b"django-webhook-sender development secret box:" + settings.SECRET_KEY.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def using_development_key() -> bool:
    return not configured_keys() and settings.DEBUG


def _keys() -> tuple[str, ...]:
    keys = configured_keys()
    if keys:
        errors = key_errors()
        if errors:
            raise SecretKeyError("; ".join(errors) + f"; {GENERATE_HINT}")
        return tuple(keys)
    if settings.DEBUG:
        return (development_key(),)
    raise SecretKeyError(
        "WEBHOOKS_SECRET_KEYS is not set: endpoint secrets are stored encrypted and DEBUG is off, "
        f"so there is no development fallback; {GENERATE_HINT}"
    )


@lru_cache(maxsize=8)
def _box(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plain: str) -> str:
    """The Fernet token (text) of `plain`, under the first key."""
    return _box(_keys()).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt(token: str, what: str = "a stored secret") -> str:
    """The plain text of a token made by `encrypt` under any configured key."""
    try:
        return _box(_keys()).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        # Never the token or anything derived from it in the message.
        raise SecretKeyError(
            f"cannot decrypt {what}: none of the WEBHOOKS_SECRET_KEYS opens it (was a key removed "
            "before `manage.py reencrypt_secrets` ran, or the value written under another key?)"
        ) from None


def is_current(token: str) -> bool:
    """Whether the newest (first) key opens `token`: nothing to re-encrypt."""
    try:
        Fernet(_keys()[0]).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


def reencrypt(token: str, what: str = "a stored secret") -> str:
    """`token` decrypted with any key and encrypted again under the first."""
    try:
        return _box(_keys()).rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError):
        raise SecretKeyError(f"cannot re-encrypt {what}: none of the WEBHOOKS_SECRET_KEYS opens it") from None
