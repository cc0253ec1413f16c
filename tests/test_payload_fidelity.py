"""Payload fidelity: a receiver gets the `data` exactly as `publish()` serialized it (key order,
number forms, unicode), not as PostgreSQL's `jsonb` gives it back; and the SHA-256 of the exact
body bytes is kept on each attempt and shown to operators. Real PostgreSQL, Redis, worker and
receiver."""

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import standardwebhooks
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse

from deliveries import IdempotencyConflict, publish, publish_many
from deliveries.model_payloads import serialize_instance
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.sending import render_body
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.hostapp.models import Order
from tests.operators import make_staff

# Everything jsonb would change: keys out of sorted order (jsonb sorts shorter keys first, then
# bytewise: "Z" < "a" < "b"), floats in exponent form (jsonb writes them out as long integers or
# decimals), integers beyond 64 bits, unicode beyond ASCII, nesting; and a Decimal and a datetime,
# which only Django's encoder can write.
PAYLOAD = {
    "b": 1,
    "a": 2,
    "Z": {"y": 1, "x": 2},
    "floats": [1e16, 6.02e23, 1.5e-7, -2.5e-300, 0.1, 1.0],
    "big": 2**70,
    "negative_big": -(2**65) - 1,
    "text": "emoji 🎉👩‍👩‍👧 CJK 漢字かな combining e\u0301 A\u030a",
    "nested": {"zeta": [{"k2": [], "k10": {}}, [1, [2.5e-8, [3]]]], "alpha": None, "mid": True},
    "amount": Decimal("12.50"),
    "at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
}
DATA_MARK = b',"data":'


def published_text(data: dict) -> bytes:
    """What publish() serializes, the project's way: Django's encoder, compact, UTF-8."""
    return json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def split_body(body: bytes) -> tuple[dict, bytes]:
    """The envelope's id/type/timestamp (parsed) and the raw bytes of its `data`, sliced from the
    body as received, never re-serialized."""
    start = body.index(DATA_MARK)  # the first: id, type and timestamp cannot hold it
    assert body.endswith(b"}")
    return json.loads(body[:start] + b"}"), body[start + len(DATA_MARK) : -1]


def delivered(event: Event) -> Delivery:
    return wait_until(
        lambda: Delivery.objects.filter(event=event, status=DeliveryStatus.SUCCEEDED).first(),
        what=f"{event} delivered",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["publish", "publish_many"])
def test_payload_arrives_byte_for_byte_as_published(celery_worker, receiver, how):
    # Given an endpoint
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))

    # When a payload jsonb would reorder and renumber is published
    with transaction.atomic():
        if how == "publish":
            event = publish("order.paid", PAYLOAD)
        else:
            [_, event] = publish_many([("order.noted", {"n": 1}), ("order.paid", PAYLOAD)])

    # Then its data arrives as exactly the bytes json.dumps wrote, in the envelope as before
    request = next(r for r in receiver.wait_for(2 if how == "publish_many" else 1) if b"order.paid" in r.body)
    head, data = split_body(request.body)
    assert data == published_text(PAYLOAD)
    assert head == {
        "id": event.webhook_id,
        "type": "order.paid",
        "timestamp": Event.objects.get(pk=event.pk)
        .created_at.isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }
    # and the signature covers those bytes
    headers = {k.lower(): v for k, v in request.headers.items()}
    standardwebhooks.Webhook(endpoint.secret).verify(request.body, headers)
    # and the attempt holds the SHA-256 of the body received
    attempt = DeliveryAttempt.objects.get(delivery=delivered(event))
    assert attempt.body_sha256 == hashlib.sha256(request.body).hexdigest()


@pytest.mark.django_db(transaction=True)
def test_model_hook_payload_coalesced_in_a_transaction_arrives_as_serialized(celery_worker, receiver):
    # Given an endpoint for order updates
    Endpoint.objects.create(url=receiver.url("/hook"), event_types=["order.created"])

    # When an order is created and then changed in the same transaction (one event, its payload
    # replaced by the latest state before commit)
    with transaction.atomic():
        order = Order.objects.create(total=Decimal("1.10"), placed_at=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC))
        order.status = "paid, 支払い済み"
        order.save()

    # Then the data arrives in the model's field order, as the hook serialized the latest state
    [request] = receiver.wait_for(1)
    assert split_body(request.body)[1] == published_text(serialize_instance(order))


@pytest.mark.django_db(transaction=True)
def test_event_and_delivery_pages_show_the_sha256_of_the_bytes_sent(celery_worker, receiver):
    # Given an event delivered to an endpoint
    Endpoint.objects.create(url=receiver.url("/hook"))
    event = publish("order.paid", PAYLOAD)
    [request] = receiver.wait_for(1)
    delivery = delivered(event)
    digest = hashlib.sha256(request.body).hexdigest()
    client = Client()
    client.force_login(make_staff("operator"))

    # When an operator opens the event and the delivery
    event_page = client.get(reverse("admin:deliveries_event_change", args=[event.pk])).content.decode()
    delivery_page = client.get(reverse("admin:deliveries_delivery_change", args=[delivery.pk])).content.decode()

    # Then both show the SHA-256 of the bytes the receiver got, and its size
    assert digest in event_page and f"{len(request.body):,} bytes" in event_page
    assert digest in delivery_page
    # and the event's payload is shown in the order it was published, numbers as written
    assert event_page.index("&quot;b&quot;: 1") < event_page.index("&quot;a&quot;: 2")
    assert "6.02e+23" in event_page and "1180591620717411303424" in event_page


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["publish", "publish_many"])
def test_republishing_the_same_payload_with_its_key_returns_the_first_event(how):
    # Given an event published with an idempotency key, its payload holding numbers jsonb rewrites
    # (6.02e23 comes back from jsonb as a 24-digit integer, unequal to the float)
    data = {"b": 1, "a": 6.02e23, "c": 2**70}
    first = publish("order.paid", data, idempotency_key="k1")

    # When the same payload is published again with that key (also with its keys in another
    # order: the same JSON value)
    again = [
        publish("order.paid", data, idempotency_key="k1")
        if how == "publish"
        else publish_many([{"type": "order.paid", "data": data, "idempotency_key": "k1"}])[0],
        publish("order.paid", {"c": 2**70, "a": 6.02e23, "b": 1}, idempotency_key="k1"),
    ]

    # Then it is the first event, not a conflict, and nothing new is written
    assert [event.pk for event in again] == [first.pk, first.pk]
    assert Event.objects.count() == 1
    # while a different value under that key is still a conflict
    with pytest.raises(IdempotencyConflict):
        publish("order.paid", {"b": 1, "a": 6.02e22, "c": 2**70}, idempotency_key="k1")


@pytest.mark.django_db(transaction=True)
def test_migration_fills_the_text_of_existing_events_as_they_were_sent():
    # Given the schema before payload text, with an event written there (jsonb only)
    executor = MigrationExecutor(connection)
    before = [("deliveries", "0003_operator_permissions")]
    executor.migrate(before)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO deliveries_event (id, tenant, type, payload, created_at, fanned_out_at) VALUES "
            "('3f0c0c0c-0000-4000-8000-000000000001', '', 'order.paid', %s::jsonb, now(), now())",
            [json.dumps({"b": 1, "a": 1e16, "text": "漢字"})],
        )

    try:
        # When the migrations run forward
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

        # Then the row's text is what was sent for it before: the jsonb value, serialized
        event = Event.objects.get()
        assert event.payload_json == '{"a":10000000000000000,"b":1,"text":"漢字"}'
        assert split_body(render_body(event))[1] == event.payload_json.encode()

        # and going back drops the column again
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        with connection.cursor() as cursor:
            columns = [
                column.name for column in connection.introspection.get_table_description(cursor, "deliveries_event")
            ]
        assert "payload_json" not in columns
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
