"""The signature formats an endpoint can sign in, what each lets an operator set, and the presets
that name the combinations receivers already know (GitHub-style, Shopify-style, Stripe-style).

Four schemes (`Endpoint.signature_scheme`, the choices of `SignatureScheme`):

- `standard`, Standard Webhooks (the default): fixed header names, nothing to set.
- `standard_ed25519`, Standard Webhooks signed with an ed25519 key pair (`v1a`,
  endpoints/signing_keys.py): fixed header names, nothing to set.
- `timestamped_hex`, Stripe's form `t=<ts>,v1=<hex>`: the header name can be set
  (`signature_header`, blank: X-Webhook-Signature).
- `body_hmac`, an HMAC-SHA256 of the body alone, as GitHub and Shopify send it: header name,
  `signature_encoding` (hex or base64, blank: hex) and `signature_prefix` (e.g. `sha256=`).
  It signs no timestamp, so a captured request can be replayed: admin warns about it.

A setting that does not apply to the chosen scheme (an encoding on `standard`, say) is refused
with a ValidationError rather than ignored: an operator who sets it expects it to change what
receivers get, and nothing would.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import models

from .validation import HEADER_NAME_RE, RESERVED_HEADERS

__all__ = [
    "DEFAULT_SIGNATURE_HEADER",
    "SCHEME_TRAITS",
    "SIGNATURE_PRESETS",
    "SchemeTraits",
    "SignatureEncoding",
    "SignaturePreset",
    "SignatureScheme",
    "matching_preset",
    "signature_settings_errors",
    "validate_signature_header",
    "validate_signature_prefix",
]

DEFAULT_SIGNATURE_HEADER = "X-Webhook-Signature"
# Longer than any provider's header (X-Shopify-Hmac-Sha256 has 21 characters) and prefix
# (sha256=), far below what servers accept in a header line.
MAX_SIGNATURE_HEADER_LENGTH = 100
MAX_SIGNATURE_PREFIX_LENGTH = 32
# Names the sender sets itself in some format. X-Webhook-Signature is the default signature
# header, so it may be named as one.
_NOT_A_SIGNATURE_HEADER = RESERVED_HEADERS - {DEFAULT_SIGNATURE_HEADER.lower()}


class SignatureScheme(models.TextChoices):
    STANDARD = "standard", "Standard Webhooks (webhook-signature)"
    TIMESTAMPED_HEX = "timestamped_hex", "Stripe-compatible (X-Webhook-Signature: t=..,v1=..)"
    BODY_HMAC = "body_hmac", "HMAC of the body (GitHub-, Shopify-style; no signed timestamp)"
    STANDARD_ED25519 = "standard_ed25519", "Standard Webhooks, ed25519 key pair (webhook-signature: v1a,..)"


class SignatureEncoding(models.TextChoices):
    HEX = "hex", "hex (lowercase)"
    BASE64 = "base64", "base64"


@dataclass(frozen=True)
class SchemeTraits:
    """What one signature scheme lets an endpoint set, and what it gives a receiver."""

    settings: frozenset[str]  # the Endpoint fields that apply, of SIGNATURE_SETTINGS
    signed_timestamp: bool  # False: nothing stops a captured request from being replayed
    one_signature: bool  # True: one signature per request, so one secret signs during a rotation
    # True: ed25519 keys sign too (`v1a` in the Standard Webhooks header); False: an HMAC-only
    # format, where a key pair left live by a switch of scheme signs nothing.
    key_pairs_sign: bool = False


SIGNATURE_SETTINGS = ("signature_header", "signature_encoding", "signature_prefix")

# One entry per SignatureScheme (a test checks they agree): an unknown scheme is a KeyError.
SCHEME_TRAITS: dict[str, SchemeTraits] = {
    "standard": SchemeTraits(frozenset(), signed_timestamp=True, one_signature=False, key_pairs_sign=True),
    "timestamped_hex": SchemeTraits(frozenset({"signature_header"}), signed_timestamp=True, one_signature=False),
    "body_hmac": SchemeTraits(frozenset(SIGNATURE_SETTINGS), signed_timestamp=False, one_signature=True),
    "standard_ed25519": SchemeTraits(frozenset(), signed_timestamp=True, one_signature=False, key_pairs_sign=True),
}


@dataclass(frozen=True)
class SignaturePreset:
    """A named combination of the signature fields, as one provider's receivers expect them."""

    label: str
    scheme: str
    header: str = ""
    encoding: str = ""
    prefix: str = ""

    def fields(self) -> dict[str, str]:
        """The Endpoint fields this preset sets (every one of them: the others are cleared)."""
        return {
            "signature_scheme": self.scheme,
            "signature_header": self.header,
            "signature_encoding": self.encoding,
            "signature_prefix": self.prefix,
        }


# The names are the receiver toolkit's too: `webhook_receiver.verify(..., preset="github")`.
SIGNATURE_PRESETS: dict[str, SignaturePreset] = {
    "standard": SignaturePreset("Standard Webhooks (webhook-signature: v1,<base64>), the default", "standard"),
    "github": SignaturePreset(
        "GitHub-style (X-Hub-Signature-256: sha256=<hex>), no signed timestamp",
        "body_hmac",
        header="X-Hub-Signature-256",
        encoding="hex",
        prefix="sha256=",
    ),
    "shopify": SignaturePreset(
        "Shopify-style (X-Shopify-Hmac-Sha256: <base64>), no signed timestamp",
        "body_hmac",
        header="X-Shopify-Hmac-Sha256",
        encoding="base64",
    ),
    "stripe": SignaturePreset(
        "Stripe-style (Stripe-Signature: t=<ts>,v1=<hex>)", "timestamped_hex", header="Stripe-Signature"
    ),
}


def matching_preset(scheme: str, header: str, encoding: str, prefix: str) -> str | None:
    """The name of the preset these settings are, or None (header names in any case)."""
    for name, preset in SIGNATURE_PRESETS.items():
        if (preset.scheme, preset.header.lower(), preset.encoding, preset.prefix) == (
            scheme,
            header.lower(),
            encoding,
            prefix,
        ):
            return name
    return None


def validate_signature_header(name: object) -> None:
    """A header name (RFC 9110 token) that none of the sender's own headers has; blank is the
    default, X-Webhook-Signature."""
    if not isinstance(name, str) or name == "":
        return
    if len(name) > MAX_SIGNATURE_HEADER_LENGTH:
        raise ValidationError(
            f"Signature header name is longer than {MAX_SIGNATURE_HEADER_LENGTH} characters.", code="header_name"
        )
    if not HEADER_NAME_RE.fullmatch(name):
        raise ValidationError(
            f"Signature header {name!r} is not a valid HTTP header name: use letters, digits and "
            "!#$%&'*+.^_`|~- only, e.g. X-Hub-Signature-256 (or leave it blank for X-Webhook-Signature).",
            code="header_name",
        )
    if name.lower() in _NOT_A_SIGNATURE_HEADER:
        raise ValidationError(
            f"Signature header {name!r} is a header the sender sets itself (Content-Type, Host, User-Agent, "
            "the webhook id and timestamp headers, ...): choose another name, e.g. X-Hub-Signature-256, or "
            "leave it blank for X-Webhook-Signature.",
            code="reserved",
        )


def validate_signature_prefix(prefix: object) -> None:
    """Visible ASCII without spaces, at most MAX_SIGNATURE_PREFIX_LENGTH characters: it starts a
    header value, where a line break would split the request and a space would be trimmed."""
    if not isinstance(prefix, str) or prefix == "":
        return
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in prefix):
        raise ValidationError(
            "Signature prefix must not contain line breaks (CR, LF) or other control characters.", code="prefix"
        )
    if not prefix.isascii():
        raise ValidationError("Signature prefix must be plain ASCII, e.g. sha256=.", code="prefix")
    if " " in prefix:
        raise ValidationError("Signature prefix must not contain spaces, e.g. sha256=.", code="prefix")
    if len(prefix) > MAX_SIGNATURE_PREFIX_LENGTH:
        raise ValidationError(
            f"Signature prefix is longer than {MAX_SIGNATURE_PREFIX_LENGTH} characters.", code="prefix"
        )


_SETTING_NAMES = {
    "signature_header": "A signature header name",
    "signature_encoding": "A signature encoding",
    "signature_prefix": "A signature prefix",
}


def signature_settings_errors(
    scheme: str, settings: dict[str, object], custom_header_names: Iterable[object]
) -> dict[str, list[ValidationError]]:
    """What is wrong between the signature fields (`settings`, by field name), by field: a
    setting the scheme does not use, or a signature header that is also a custom header.

    An unknown scheme gives no errors here: the scheme field's own choices refuse it.
    """
    traits = SCHEME_TRAITS.get(scheme)
    if traits is None:
        return {}
    errors: dict[str, list[ValidationError]] = {}
    for field, value in settings.items():
        if value and field not in traits.settings:
            users = " and ".join(s for s, t in SCHEME_TRAITS.items() if field in t.settings)
            errors[field] = [
                ValidationError(
                    f"{_SETTING_NAMES[field]} applies only to the {users} signature scheme, not to {scheme}: "
                    "clear it, or choose a scheme (or preset) that uses it.",
                    code="not_applicable",
                )
            ]
    header = settings.get("signature_header")
    if header and isinstance(header, str) and "signature_header" not in errors:
        custom = {name.lower() for name in custom_header_names if isinstance(name, str)}
        if header.lower() in custom:
            errors["signature_header"] = [
                ValidationError(
                    f"Signature header {header!r} is also one of this endpoint's custom headers: remove that "
                    "custom header, or choose another signature header name.",
                    code="custom_header",
                )
            ]
    return errors
