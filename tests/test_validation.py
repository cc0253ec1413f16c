"""Bad input to publish() and to Endpoint: a clear error, and nothing written."""

import math
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from django.core.exceptions import ValidationError

from deliveries import IdempotencyConflict, PublishError, publish
from deliveries.fanout import fan_out
from deliveries.models import Delivery, Event
from endpoints.event_types import matches
from endpoints.models import Endpoint, EndpointSecret

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("event_type", "data", "message"),
    [
        ("order.paid", [1, 2], "must be a JSON object"),
        ("order.paid", "text", "must be a JSON object"),
        ("order.paid", {"n": math.nan}, "not JSON-serializable"),
        ("order.paid", {"n": math.inf}, "not JSON-serializable"),
        ("order.paid", {"obj": object()}, "not JSON-serializable"),
        ("order.paid", {"s": {1, 2}}, "not JSON-serializable"),
        ("order.paid", {"nul": "a\x00b"}, "NUL"),
        ("order.paid", {"big": "x" * (256 * 1024)}, "the limit is 262144 bytes"),
        ("", {}, "1 to 100 characters"),
        ("order paid", {}, "dot-separated"),
        ("order..paid", {}, "dot-separated"),
        (".order", {}, "dot-separated"),
        ("order.*", {}, "dot-separated"),
        ("x" * 101, {}, "1 to 100 characters"),
        (42, {}, "must be a string"),
    ],
)
def test_publish_refuses_bad_input_and_writes_nothing(event_type, data, message):
    with pytest.raises(PublishError, match=message) as raised:
        publish(event_type, data)
    assert isinstance(raised.value, ValueError)
    assert Event.objects.count() == 0


def test_publish_refuses_too_deep_nesting():
    data: dict = {}
    inner = data
    for _ in range(5000):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(PublishError, match="nested too deeply"):
        publish("order.paid", data)
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tenant": None}, "tenant must be a string"),
        ({"tenant": "t" * 101}, "tenant must be a string"),
        ({"idempotency_key": ""}, "idempotency_key must be a non-empty string"),
        ({"idempotency_key": 5}, "idempotency_key must be a non-empty string"),
        ({"idempotency_key": "k" * 201}, "idempotency_key must be a non-empty string"),
    ],
)
def test_publish_refuses_bad_tenant_or_key(kwargs, message):
    with pytest.raises(PublishError, match=message):
        publish("order.paid", {}, **kwargs)
    assert Event.objects.count() == 0


def test_payload_at_the_size_limit_is_accepted(settings):
    settings.WEBHOOKS_MAX_PAYLOAD_BYTES = 1000
    overhead = len('{"s":""}')
    publish("order.paid", {"s": "x" * (1000 - overhead)})
    with pytest.raises(PublishError, match="1001 bytes"):
        publish("order.paid", {"s": "x" * (1001 - overhead)})
    assert Event.objects.count() == 1


def test_dates_decimals_and_uuids_are_serialized_like_django_does():
    event = publish(
        "order.paid",
        {
            "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "amount": Decimal("12.50"),
            "id": UUID("12345678-1234-5678-1234-567812345678"),
        },
    )
    event.refresh_from_db()
    assert event.payload == {
        "at": "2026-01-02T03:04:05Z",
        "amount": "12.50",
        "id": "12345678-1234-5678-1234-567812345678",
    }


def test_idempotency_key_is_per_tenant():
    a = publish("order.paid", {"o": 1}, tenant="a", idempotency_key="k")
    b = publish("order.paid", {"o": 1}, tenant="b", idempotency_key="k")
    assert a.pk != b.pk
    assert publish("order.paid", {"o": 1}, tenant="a", idempotency_key="k").pk == a.pk
    assert Event.objects.count() == 2


def test_reusing_an_idempotency_key_for_a_different_event_is_refused():
    publish("order.paid", {"o": 1}, idempotency_key="k")
    with pytest.raises(IdempotencyConflict, match="already used for a different event"):
        publish("order.paid", {"o": 2}, idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        publish("order.refunded", {"o": 1}, idempotency_key="k")
    assert Event.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": "ftp://example.com/hook"}, "url", "scheme must be http or https"),
        ({"url": "example.com/hook"}, "url", "scheme must be http or https"),
        ({"url": "https:///hook"}, "url", "must include a host"),
        ({"url": "https://user:pw@example.com/hook"}, "url", "must not contain credentials"),
        ({"url": "https://example.com/ho ok"}, "url", "spaces or control characters"),
        ({"url": "https://example.com:99999/hook"}, "url", "malformed"),
        ({"url": "https://example.com/hook#frag"}, "url", "fragment"),
        ({"url": "https://example.com/" + "a" * 2000}, "url", "longer than 2000"),
        ({"url": ""}, "url", "cannot be blank"),
        ({"event_types": "order.*"}, "event_types", "must be a list"),
        ({"event_types": ["order..paid"]}, "event_types", "dot-separated"),
        ({"event_types": ["order paid"]}, "event_types", "dot-separated"),
        ({"event_types": [7]}, "event_types", "must be a string"),
        ({"headers": ["a"]}, "headers", "must be an object"),
        ({"headers": {"Bad Name": "x"}}, "headers", "not a valid HTTP header name"),
        ({"headers": {"webhook-signature": "x"}}, "headers", "cannot be overridden"),
        ({"headers": {"Content-Type": "text/plain"}}, "headers", "cannot be overridden"),
        ({"headers": {"X-A": "a\r\nX-B: b"}}, "headers", "control characters"),
        ({"headers": {"X-A": 1}}, "headers", "string value"),
        ({"signature_scheme": "md5"}, "signature_scheme", "not a valid choice"),
        ({"secret": "not-a-secret"}, "__all__", "must start with 'whsec_'"),
        ({"secret": "whsec_!!!"}, "__all__", "followed by base64"),
        ({"secret": "whsec_c2hvcnQ="}, "__all__", "24 to 64"),
    ],
)
def test_endpoint_refuses_bad_input_and_writes_nothing(fields, field, message):
    fields = {"url": "https://example.com/hook", **fields}
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(**fields)
    errors = raised.value.message_dict
    assert field in errors, errors
    assert any(message in text for text in errors[field]), errors
    assert Endpoint.objects.count() == 0
    assert EndpointSecret.objects.count() == 0


def test_endpoint_gets_a_standard_webhooks_secret_on_creation():
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    assert endpoint.secret.startswith("whsec_")
    assert Endpoint.objects.get().secret == endpoint.secret
    other = Endpoint.objects.create(url="https://example.com/hook2")
    assert other.secret != endpoint.secret


def test_endpoint_accepts_a_given_secret():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert Endpoint.objects.create(url="https://example.com/hook", secret=secret).secret == secret


def test_rotation_keeps_old_secret_live_for_the_grace_then_only_the_new_one():
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    old = endpoint.secret
    new = endpoint.rotate_secret()
    assert endpoint.live_secrets() == [new, old]
    first = endpoint.secrets.order_by("id").first()  # the old one (secrets are encrypted: no filter by value)
    EndpointSecret.objects.filter(pk=first.pk).update(expires_at=datetime(2000, 1, 1, tzinfo=UTC))
    assert endpoint.live_secrets() == [new]


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        ([], "order.paid", True),
        (["*"], "order.paid", True),
        (["order.*"], "order.paid", True),
        (["order.*"], "order.refund.created", True),
        (["order.*"], "order", False),
        (["order.*"], "orders.paid", False),
        (["order.paid"], "order.paid", True),
        (["order.paid"], "order.paid.late", False),
        (["*.paid"], "invoice.paid", True),
        (["invoice.*", "order.paid"], "order.paid", True),
        (["invoice.*"], "order.paid", False),
    ],
)
def test_pattern_matching(patterns, event_type, expected):
    assert matches(patterns, event_type) is expected


def test_fan_out_twice_creates_nothing_twice():
    Endpoint.objects.create(url="https://example.com/a")
    Endpoint.objects.create(url="https://example.com/b")
    Endpoint.objects.create(url="https://example.com/c", is_active=False)
    event = publish("order.paid", {"o": 1})

    first = fan_out(str(event.pk))
    second = fan_out(str(event.pk))

    assert len(first) == 2
    assert second == []
    assert Delivery.objects.filter(event=event).count() == 2
