"""publish_many(): many events in one call, validated together, written in bulk, fanned out
after one commit."""

import json

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from deliveries import IdempotencyConflict, PublishError, publish, publish_many
from deliveries.models import DeliveryStatus, Event
from endpoints.models import Endpoint
from tests.conftest import wait_until


@pytest.mark.django_db
def test_a_thousand_events_take_a_bounded_number_of_queries():
    # Given 1,000 events, half of them with idempotency keys
    events = [
        {"type": "order.paid", "data": {"order": n}, **({"idempotency_key": f"order-{n}"} if n % 2 else {})}
        for n in range(1000)
    ]

    # When they are published in one call inside the host's transaction
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        published = publish_many(events)

    # Then a handful of queries wrote them all: one key lookup, two INSERTs of 500, savepoints
    assert len(published) == 1000
    assert Event.objects.count() == 1000
    assert len(queries) <= 10, [q["sql"][:80] for q in queries.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_every_event_is_delivered_once(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with transaction.atomic():
        published = publish_many(("order.paid", {"order": n}) for n in range(20))

    requests = receiver.wait_for(20)
    wait_until(lambda: Event.objects.filter(deliveries__status=DeliveryStatus.SUCCEEDED).count() == 20)
    assert sorted(json.loads(r.body)["data"]["order"] for r in requests) == list(range(20))
    assert {json.loads(r.body)["id"] for r in requests} == {event.webhook_id for event in published}
    assert len(receiver.received()) == 20


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_sends_none_of_them(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with pytest.raises(RuntimeError), transaction.atomic():
        publish_many([("order.paid", {"order": 1}), ("order.paid", {"order": 2})])
        raise RuntimeError("host code failed after publishing")
    committed = publish("order.paid", {"order": "committed"})

    [request] = receiver.wait_for(1)
    assert json.loads(request.body)["id"] == committed.webhook_id
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_events_come_back_in_input_order():
    published = publish_many([("b.second", {"n": 2}), ("a.first", {"n": 1}), ("c.third", {"n": 3})])

    assert [(event.type, event.payload) for event in published] == [
        ("b.second", {"n": 2}),
        ("a.first", {"n": 1}),
        ("c.third", {"n": 3}),
    ]
    assert all(event.pk for event in published)


@pytest.mark.django_db
def test_dict_items_may_name_their_tenant_and_key():
    published = publish_many(
        [
            {"type": "order.paid", "data": {"o": 1}},
            {"type": "order.paid", "data": {"o": 2}, "tenant": "globex", "idempotency_key": "k2"},
        ],
        tenant="acme",
    )

    assert [(e.tenant, e.idempotency_key) for e in published] == [("acme", None), ("globex", "k2")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad_item", "message"),
    [
        (("order paid", {}), r"events\[1\]: event type 'order paid' must be dot-separated"),
        (("order.paid", {"n": float("nan")}), r"events\[1\]: payload is not JSON-serializable"),
        (("order.paid", [1]), r"events\[1\]: payload must be a JSON object"),
        (("order.paid",), r"events\[1\]: an event is a \(type, data\) tuple or a dict"),
        (
            {"type": "order.paid", "payload": {}},
            r"events\[1\]: an event given as a dict needs the keys 'type' and 'data'",
        ),
        ({"type": "order.paid", "data": {}, "idempotency_key": ""}, r"events\[1\]: idempotency_key must be"),
        ({"type": "order.paid", "data": {}, "tenant": None}, r"events\[1\]: tenant must be a string"),
    ],
)
def test_an_invalid_item_raises_naming_its_index_and_writes_nothing(bad_item, message):
    with pytest.raises(PublishError, match=message):
        publish_many([("order.paid", {"n": 0}), bad_item, ("order.paid", {"n": 2})])

    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_existing_key_returns_the_existing_event_and_the_rest_are_created():
    first = publish("order.paid", {"o": 1}, idempotency_key="order-1")

    published = publish_many(
        [
            {"type": "order.paid", "data": {"o": 1}, "idempotency_key": "order-1"},
            {"type": "order.paid", "data": {"o": 2}, "idempotency_key": "order-2"},
        ]
    )

    assert published[0].pk == first.pk
    assert published[1].pk != first.pk
    assert Event.objects.count() == 2


@pytest.mark.django_db
def test_key_already_used_for_another_event_raises_naming_the_item_and_writes_nothing():
    publish("order.paid", {"o": 1}, idempotency_key="order-1")

    with pytest.raises(IdempotencyConflict, match=r"events\[1\]: idempotency key 'order-1' was already used"):
        publish_many(
            [
                {"type": "order.paid", "data": {"o": 0}, "idempotency_key": "order-0"},
                {"type": "order.paid", "data": {"o": 99}, "idempotency_key": "order-1"},
            ]
        )

    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_a_key_repeated_in_one_call_is_one_event():
    published = publish_many(
        [
            {"type": "order.paid", "data": {"o": 1}, "idempotency_key": "order-1"},
            {"type": "order.paid", "data": {"o": 1}, "idempotency_key": "order-1"},
        ]
    )

    assert published[0] is published[1]
    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_a_key_repeated_in_one_call_for_another_event_is_refused():
    with pytest.raises(IdempotencyConflict, match=r"events\[1\]"):
        publish_many(
            [
                {"type": "order.paid", "data": {"o": 1}, "idempotency_key": "order-1"},
                {"type": "order.paid", "data": {"o": 2}, "idempotency_key": "order-1"},
            ]
        )

    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_nothing_to_publish_queries_nothing():
    with CaptureQueriesContext(connection) as queries:
        assert publish_many([]) == []

    assert len(queries) == 0
