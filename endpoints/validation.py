"""Validation of what an operator or host code sets on an endpoint.

Each validator raises django.core.exceptions.ValidationError with a message that says what is
wrong and what would be accepted; Endpoint.save() runs them all, so nothing invalid is written.
"""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from .event_types import MAX_PATTERNS_PER_ENDPOINT, pattern_error
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
    """An absolute URL with a host and no credentials that the transport policy allows: https
    (http too only while WEBHOOKS_ALLOW_HTTP is on, i.e. in DEBUG), a port listed in
    WEBHOOKS_ALLOWED_PORTS when that is set, and (unless private networks are allowed) not a
    visibly internal address.

    Runs when an endpoint is saved and again before every send, so a policy tightened later
    applies to endpoints saved before.
    """
    if not isinstance(url, str) or not url:
        raise ValidationError("URL is required.", code="required")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"URL is longer than {MAX_URL_LENGTH} characters.", code="too_long")
    if any(ord(c) <= 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise ValidationError("URL must not contain spaces or control characters.", code="invalid_url")
    if not is_encodable(url):
        raise ValidationError("URL must be valid Unicode text (no lone surrogates).", code="invalid_url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"URL is malformed: {exc}.", code="invalid_url") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"URL scheme must be http or https, not {parts.scheme or 'missing'!r}.", code="scheme")
    if parts.scheme == "http" and not settings.WEBHOOKS_ALLOW_HTTP:
        raise ValidationError(
            "URL must use https: plain http is refused outside DEBUG (WEBHOOKS_ALLOW_HTTP).", code="scheme"
        )
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
    allowed_ports = settings.WEBHOOKS_ALLOWED_PORTS
    effective_port = port or (443 if parts.scheme == "https" else 80)
    if allowed_ports and effective_port not in allowed_ports:
        raise ValidationError(
            f"URL port {effective_port} is not allowed; allowed ports: "
            f"{', '.join(map(str, sorted(allowed_ports)))} (WEBHOOKS_ALLOWED_PORTS).",
            code="port",
        )
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


def is_encodable(text: str) -> bool:
    """Whether `text` can be stored and sent as UTF-8 (lone surrogates cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_plain_text(value: object) -> None:
    """Free text an operator sets (tenant, description): storable in PostgreSQL."""
    if isinstance(value, str) and ("\x00" in value or not is_encodable(value)):
        raise ValidationError("Text must not contain NUL characters or lone surrogates.", code="invalid_text")


def validate_event_type_patterns(patterns: object) -> None:
    """A list of at most MAX_PATTERNS_PER_ENDPOINT subscription patterns (empty: all event types)."""
    if not isinstance(patterns, list):
        raise ValidationError("Event types must be a list of patterns such as ['order.*'].", code="not_a_list")
    if len(patterns) > MAX_PATTERNS_PER_ENDPOINT:
        raise ValidationError(
            f"At most {MAX_PATTERNS_PER_ENDPOINT} event type patterns per endpoint (got {len(patterns)}); "
            "use wildcards such as 'order.*'.",
            code="too_many",
        )
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


def validate_sensitive_header_names(names: object) -> None:
    """Names of custom headers whose values are credentials: redacted wherever headers are
    recorded (attempt records), matched case-insensitively."""
    if not isinstance(names, list):
        raise ValidationError(
            "Sensitive headers must be a list of header names, e.g. ['Authorization'].", code="not_a_list"
        )
    if len(names) > MAX_HEADERS:
        raise ValidationError(f"At most {MAX_HEADERS} sensitive header names are allowed.", code="too_many")
    for name in names:
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            raise ValidationError(f"Header name {name!r} is not a valid HTTP header name.", code="header_name")
