"""Validation of what an operator or host code sets on an endpoint.

Each validator raises django.core.exceptions.ValidationError with a message that says what is
wrong and what would be accepted; Endpoint.save() runs them all, so nothing invalid is written.
"""

import re
from urllib.parse import urlsplit

import requests
from django.core.exceptions import ValidationError
from requests.utils import check_header_validity
from urllib3.util import SKIP_HEADER

from .app_settings import webhook_settings
from .event_types import MAX_PATTERNS_PER_ENDPOINT, pattern_error
from .network_policy import address_phrase, host_blocked_reason

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
# DNS limits on a host name, counted on the ASCII form that is sent (punycode for IDNA names).
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
HOST_NAME_RE = re.compile(r"[a-z0-9_.-]+")  # as sent: lowercased, IDNA labels in punycode
HOST_CHARACTERS_MESSAGE = (
    "URL host {host!r} is not one the HTTP client can send to: use letters, digits, hyphens and "
    "dots (no '*' wildcard, no leading dot)."
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
    if parts.scheme == "http" and not webhook_settings.ALLOW_HTTP:
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
    allowed_ports = webhook_settings.ALLOWED_PORTS
    effective_port = port or (443 if parts.scheme == "https" else 80)
    if allowed_ports and effective_port not in allowed_ports:
        raise ValidationError(
            f"URL port {effective_port} is not allowed; allowed ports: "
            f"{', '.join(map(str, sorted(allowed_ports)))} (WEBHOOKS_ALLOWED_PORTS).",
            code="port",
        )
    host = parts.hostname
    sent_host = host_as_sent(url, host)
    if not webhook_settings.ALLOW_PRIVATE_NETWORKS:
        # Both the host as written and as the client will send it: "%6c%6f%63alhost" goes to
        # localhost.
        for candidate in dict.fromkeys((host, sent_host)):
            reason = host_blocked_reason(candidate)
            if reason:
                written = repr(host) if candidate == host else f"{host!r} (sent as {candidate!r})"
                raise ValidationError(
                    f"URL host {written} is {address_phrase(reason)}; webhooks may only go to public "
                    "addresses (set WEBHOOKS_ALLOW_PRIVATE_NETWORKS=1 for local development).",
                    code="blocked_address",
                )


def host_as_sent(url: str, host: str) -> str:
    """The host of `url` as the HTTP client will send it, refused if the client cannot.

    Normalised by the client's own function, requests' `PreparedRequest.prepare_url` (the
    transport runs it at every send): urllib3 percent-decodes the host, lowercases it and
    encodes each non-ASCII label with IDNA 2008 (strict: full-width letters or an ideographic
    full stop are refused, not folded as UTS #46 would). Then the resolver's limits apply
    (Python's IDNA codec, which urllib3 runs before connecting, and DNS): labels of 1 to 63
    characters, at most 253 in all. What fails here would fail at every send.
    """
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
    except (requests.RequestException, ValueError):
        # The client's message may quote the whole URL (and a token in its query): not repeated.
        if not host.isascii():
            raise ValidationError(
                f"URL host {host!r} is not a valid internationalised host name (IDNA 2008, as the "
                "HTTP client encodes it; full-width or other compatibility characters are refused). "
                "Write it in its standard form, e.g. bücher.example or xn--bcher-kva.example.",
                code="invalid_url",
            ) from None
        raise ValidationError(HOST_CHARACTERS_MESSAGE.format(host=host), code="invalid_url") from None
    sent = urlsplit(prepared.url).hostname or ""
    if ":" in sent:  # an IPv6 literal
        return sent
    name = sent.removesuffix(".")
    if len(name) > MAX_HOST_LENGTH:
        raise ValidationError(
            f"URL host is {len(name)} characters long as sent (IDNA-encoded); a host name has at most "
            f"{MAX_HOST_LENGTH}.",
            code="invalid_url",
        )
    if not HOST_NAME_RE.fullmatch(name):
        # The client percent-encodes other characters ("ex{ample" is sent as "ex%7bample"),
        # and no resolver knows such a name.
        raise ValidationError(HOST_CHARACTERS_MESSAGE.format(host=host), code="invalid_url")
    try:
        sent.encode("idna")
    except UnicodeError:
        invalid = True
    else:
        invalid = any(not 0 < len(label) <= MAX_LABEL_LENGTH for label in name.split("."))
    if invalid:
        raise ValidationError(
            f"URL host {host!r} is not a valid host name: each dot-separated part must have 1 to "
            f"{MAX_LABEL_LENGTH} characters.",
            code="invalid_url",
        )
    return sent


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
        if value != value.strip(" \t"):
            # requests refuses a leading space or tab at every send (InvalidHeader); a trailing
            # one is not part of the value for the receiver (RFC 9110, 5.5).
            raise ValidationError(f"Header {name!r} must not start or end with a space or tab.", code="header_value")
        if value == SKIP_HEADER:
            raise ValidationError(f"Header {name!r} has a value reserved by the HTTP client.", code="header_value")
        try:
            # The client's own check, run again at every send: what it refuses is refused here.
            check_header_validity((name, value))
        except requests.exceptions.InvalidHeader:
            raise ValidationError(f"Header {name!r} is refused by the HTTP client.", code="header_value") from None


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
