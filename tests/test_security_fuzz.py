"""The bad-input sweep: `publish`, endpoint creation and the receiver toolkit's `verify`, fed
by hypothesis with deep nesting, huge strings, NaN and Infinity, non-UTF-8 bytes, control
characters and enormous header values.

Each call either succeeds or raises its documented error (PublishError, ValidationError,
WebhookVerificationError or ValueError) with a message; never anything else, never a
half-written row (rows are counted before and after inside every example), never a hang
(examples are bounded in number and each in time).
"""

import base64
import hashlib
import hmac
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliveries import PublishError, publish, publish_many
from deliveries.models import Event
from endpoints.models import Endpoint, EndpointSecret
from webhook_receiver import WebhookVerificationError, verify

BOUNDED = settings(
    max_examples=120,
    # The same examples on every run, so CI is reproducible; a hang still fails the deadline.
    derandomize=True,
    deadline=timedelta(seconds=10),
    database=None,  # no example database written into the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies ---------------------------------------------------------------------------------


class HugeInt(int):
    """An integer too long for str() (Python refuses past 4300 digits); printable here."""

    def __repr__(self) -> str:
        return f"HugeInt({self.bit_length()} bits)"


# Text as it arrives from outside: any code point, with the troublemakers (NUL, lone
# surrogates, CR/LF, DEL, C1 controls, separators, BOM) mixed in far more often than chance.
TRICKY = ["\x00", "\r\n", "\t", "\x7f", "\x85", "\u2028", "\ufeff", "é", "☕", " ", "%00", "\\", '"']
tricky_text = st.lists(
    st.one_of(st.sampled_from(TRICKY), st.characters(categories=["Cs"]), st.text(max_size=6)), max_size=6
).map("".join)
any_text = st.one_of(st.text(max_size=40), tricky_text)
huge_text = st.builds(lambda c, n: c * n, st.characters(), st.integers(10_000, 300_000))
weird_scalars = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        Decimal("NaN"),
        Decimal("Infinity"),
        HugeInt(10**5000),
        -(10**400),
        b"\xff\xfe bytes",
        "nul \x00 inside",
        "lone \ud800 surrogate",
        complex(1, 2),
        object(),
        {1, 2},
        datetime(2026, 1, 1, tzinfo=UTC),
    ]
)
leaves = st.none() | st.booleans() | st.integers() | st.floats() | any_text | weird_scalars
json_like = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text | st.integers() | st.none(), children, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int, kind: str) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"x": value}
    return value


deep = st.builds(nested, st.integers(1, 3000), st.sampled_from(["list", "dict"]))
payloads = st.one_of(
    st.dictionaries(any_text, json_like, max_size=5),
    st.builds(lambda v: {"deep": v}, deep),
    st.builds(lambda v: {"huge": v}, huge_text),
    json_like,
    deep,
)
valid_types = st.from_regex(r"[a-z]{1,8}(\.[a-z_]{1,8}){0,3}", fullmatch=True)
event_types = st.one_of(
    valid_types,
    valid_types.map(lambda t: t + "\n"),
    any_text,
    huge_text,
    st.integers(),
    st.none(),
)
tenants = st.one_of(st.just(""), any_text, huge_text, st.integers(), st.none())
idempotency_keys = st.one_of(st.none(), any_text, huge_text, st.integers())


def counts() -> tuple[int, ...]:
    return (Event.objects.count(), Endpoint.objects.count(), EndpointSecret.objects.count())


# --- publish ----------------------------------------------------------------------------------


def publish_writes_one_event_or_nothing(event_type, data, tenant="", idempotency_key=None) -> None:
    with transaction.atomic():
        before = counts()
        try:
            event = publish(event_type, data, tenant=tenant, idempotency_key=idempotency_key)
        except PublishError as exc:
            # Then: a clear error, and nothing written
            assert str(exc)
            assert counts() == before
        else:
            # Or: exactly one event, stored as it will be sent; never with a key converted to a
            # string (1 and "1" would collide)
            assert not has_non_string_key(data)
            assert counts() == (before[0] + 1, *before[1:])
            # (The payload is not compared: PostgreSQL's jsonb keeps numbers as decimals, so
            # 1.0369147466408282e+17 comes back as the integer it spells.)
            stored = Event.objects.get(pk=event.pk)
            assert (stored.type, stored.tenant, stored.idempotency_key) == (event_type, tenant, idempotency_key)
        transaction.set_rollback(True)


def has_non_string_key(data: object) -> bool:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                return True
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return False


@pytest.mark.django_db
@BOUNDED
@given(data=payloads)
def test_publish_with_any_payload_writes_one_event_or_refuses_cleanly(data):
    publish_writes_one_event_or_nothing("order.paid", data)


@pytest.mark.django_db
@BOUNDED
@given(event_type=event_types, tenant=tenants, idempotency_key=idempotency_keys)
def test_publish_with_any_type_tenant_and_key_writes_one_event_or_refuses_cleanly(event_type, tenant, idempotency_key):
    publish_writes_one_event_or_nothing(event_type, {"order": 1}, tenant, idempotency_key)


@pytest.mark.django_db
@BOUNDED
@given(items=st.lists(st.tuples(event_types, payloads), max_size=4))
def test_publish_many_writes_all_or_nothing(items):
    with transaction.atomic():
        before = counts()
        try:
            events = publish_many(items)
        except PublishError as exc:
            assert str(exc).startswith("events[")
            assert counts() == before
        else:
            assert counts() == (before[0] + len(events), *before[1:])
        transaction.set_rollback(True)


# --- endpoint creation --------------------------------------------------------------------------

hosts = st.one_of(
    st.sampled_from(
        [
            "example.com",
            "EXAMPLE.com.",
            "xn--bcher-kva.example",
            "bücher.example",
            "127.0.0.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "2130706433",
            "0x7f.1",
            "localhost",
            "[fe80::1%25eth0]",
            "[",
            "a" * 300,
            "",
        ]
    ),
    any_text,
)
urls = st.one_of(
    st.builds(
        "{}://{}{}{}".format,
        st.one_of(st.just("https"), st.sampled_from(["http", "HTTPS", "ftp", "javascript", ""])),
        st.one_of(st.just("example.com"), hosts),
        st.sampled_from(["", ":443", ":0", ":65536", ":-1", ":8443", ":abc", ":"]),
        st.one_of(st.just("/hook"), any_text, st.builds("/{}?{}".format, any_text, any_text)),
    ),
    any_text,
    huge_text,
    st.integers(),
    st.none(),
)
header_names = st.one_of(st.sampled_from(["Authorization", "X-Api-Key", "webhook-signature", "Host"]), any_text)
header_values = st.one_of(any_text, huge_text, st.integers(), st.none(), st.just("a\r\nInjected: yes"))


def mostly(valid, fuzz):
    """Usually the valid value, so that one bad field at a time reaches the database."""
    return st.one_of(st.just(valid), st.just(valid), fuzz)


@pytest.mark.django_db
@BOUNDED
@given(
    url=mostly("https://example.com/hook", urls),
    event_types=mostly([], st.one_of(st.lists(st.one_of(event_types, st.just("order.*")), max_size=4), json_like)),
    headers=mostly({}, st.one_of(st.dictionaries(header_names, header_values, max_size=4), json_like)),
    sensitive_headers=mostly([], st.one_of(st.lists(header_names, max_size=3), json_like)),
    tenant=mostly("", tenants),
    description=mostly("", st.one_of(any_text, huge_text)),
    secret=st.one_of(st.none(), any_text, st.builds("whsec_{}".format, any_text)),
)
def test_endpoint_creation_either_saves_it_with_its_secret_or_refuses_cleanly(
    url, event_types, headers, sensitive_headers, tenant, description, secret
):
    fields = {
        "url": url,
        "event_types": event_types,
        "headers": headers,
        "sensitive_headers": sensitive_headers,
        "tenant": tenant,
        "description": description,
    }
    if secret is not None:
        fields["secret"] = secret
    with transaction.atomic():
        before = counts()
        try:
            endpoint = Endpoint.objects.create(**fields)
        except ValidationError as exc:
            assert exc.messages and all(exc.messages)
            assert counts() == before
        else:
            assert counts() == (before[0], before[1] + 1, before[2] + 1)
            stored = Endpoint.objects.get(pk=endpoint.pk)
            assert stored.url == url and stored.request_headers() == headers
            assert stored.secret.startswith("whsec_")
        transaction.set_rollback(True)


# --- the receiver toolkit's verify --------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOW = 1_800_000_000
enormous = st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "v1,", " ", "\x00", "é", "="]), st.integers(1, 2_000_000)
)
raw_header_values = st.one_of(
    any_text,
    enormous,
    st.binary(max_size=64),  # non-UTF-8 bytes, as some servers hand them over
    st.integers(),
    st.none(),
    st.sampled_from([str(NOW), f"{NOW}\n", "v1," + "A" * 44, "v1a,xyz", "t=1,v1=" + "0" * 64]),
)
verify_header_names = st.sampled_from(
    ["webhook-id", "Webhook-Timestamp", "WEBHOOK-SIGNATURE", "X-Webhook-Id", "X-Webhook-Signature", "other"]
)
bodies = st.one_of(
    st.binary(max_size=200),
    any_text,
    st.sampled_from(
        [
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b'{"a": -Infinity}',
            b'{"a": 1e999999}',
            b"[" * 100_000,
            b'{"a":' * 50_000,
            b"\xff\xfe{}",
            b'{"a": "\\ud800"}',
            b'{"n": ' + b"9" * 10_000 + b"}",
        ]
    ),
)


@BOUNDED
@given(
    secret=st.one_of(st.just(SECRET), any_text, st.lists(any_text, max_size=3), st.integers(), st.none()),
    headers=st.dictionaries(st.one_of(verify_header_names, any_text), raw_header_values, max_size=5),
    body=bodies,
    tolerance=st.one_of(st.just(300), st.integers(), st.floats()),
)
def test_verify_rejects_any_malformed_request_with_its_own_error(secret, headers, body, tolerance):
    try:
        payload = verify(secret, headers, body, tolerance, now=NOW)
    except (WebhookVerificationError, ValueError) as exc:
        assert str(exc)
    else:
        assert isinstance(payload, dict)


def _sign(msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@BOUNDED
@given(body=st.one_of(bodies, st.builds(lambda v: repr(v).encode("utf-8", "replace"), json_like)))
def test_an_authentic_request_with_any_body_gives_a_dict_or_invalid_payload(body):
    # Given a correctly signed request whose body is anything at all
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": _sign("msg_1", str(NOW), raw)}
    # When it is verified, the signature matches, so only the payload can be refused
    try:
        payload = verify(SECRET, headers, raw, now=NOW)
    except WebhookVerificationError as exc:
        assert type(exc).__name__ == "InvalidPayloadError", exc
    else:
        assert isinstance(payload, dict)
