"""Validation of what an operator or host code sets on an endpoint.

Each validator raises django.core.exceptions.ValidationError with a message that says what is
wrong and what would be accepted; Endpoint.save() runs them all, so nothing invalid is written.
"""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from .event_types import pattern_error
from .network_policy import host_blocked_reason

MAX_URL_LENGTH = 2000
MAX_HEADERS = 20
MAX_HEADER_VALUE_LENGTH = 1000
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the sender owns: a custom header may never replace them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "host",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-webhook-id",
        "x-webhook-signature",
        "x-webhook-timestamp",
    }
)


def validate_webhook_url(url: str) -> None:
    """An absolute http(s) URL with a host, no credentials, and (unless private networks are
    allowed) not pointing at a visibly internal address."""
    if not isinstance(url, str) or not url:
        raise ValidationError("URL is required.", code="required")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"URL is longer than {MAX_URL_LENGTH} characters.", code="too_long")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise ValidationError("URL must not contain spaces or control characters.", code="invalid_url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"URL is malformed: {exc}.", code="invalid_url") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"URL scheme must be http or https, not {parts.scheme or 'missing'!r}.", code="scheme")
    if not parts.hostname:
        raise ValidationError("URL must include a host name, e.g. https://example.com/hook.", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "URL must not contain credentials; put an Authorization value in the endpoint's headers.",
            code="credentials",
        )
    if parts.fragment:
        raise ValidationError("URL must not contain a #fragment (it is never sent).", code="invalid_url")
    if port == 0:
        raise ValidationError("URL port must be between 1 and 65535.", code="invalid_url")
    host = parts.hostname
    if not host.startswith("[") and ":" not in host:
        try:
            host.encode("idna")
        except UnicodeError:
            raise ValidationError(f"URL host {host!r} is not a valid host name.", code="invalid_url") from None
    if not settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
        reason = host_blocked_reason(host)
        if reason:
            raise ValidationError(
                f"URL host {host!r} is a {reason} address; webhooks may only go to public "
                "addresses (set WEBHOOKS_ALLOW_PRIVATE_NETWORKS=1 for local development).",
                code="blocked_address",
            )


def validate_event_type_patterns(patterns: object) -> None:
    """A list of subscription patterns (empty: all event types)."""
    if not isinstance(patterns, list):
        raise ValidationError("Event types must be a list of patterns such as ['order.*'].", code="not_a_list")
    errors = [error for error in map(pattern_error, patterns) if error]
    if errors:
        raise ValidationError([ValidationError(e.capitalize() + ".", code="pattern") for e in errors])


def validate_custom_headers(headers: object) -> None:
    """A small dict of extra request headers that never replace the sender's own."""
    if not isinstance(headers, dict):
        raise ValidationError("Headers must be an object of header names to string values.", code="not_an_object")
    if len(headers) > MAX_HEADERS:
        raise ValidationError(f"At most {MAX_HEADERS} custom headers are allowed.", code="too_many")
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            raise ValidationError(f"Header name {name!r} is not a valid HTTP header name.", code="header_name")
        if name.lower() in RESERVED_HEADERS:
            raise ValidationError(f"Header {name!r} is set by the sender and cannot be overridden.", code="reserved")
        if not isinstance(value, str):
            raise ValidationError(f"Header {name!r} must have a string value.", code="header_value")
        if len(value) > MAX_HEADER_VALUE_LENGTH:
            raise ValidationError(
                f"Header {name!r} is longer than {MAX_HEADER_VALUE_LENGTH} characters.", code="header_value"
            )
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            raise ValidationError(f"Header {name!r} must not contain control characters.", code="header_value")
        if not value.isascii():
            raise ValidationError(f"Header {name!r} must be plain ASCII text.", code="header_value")
