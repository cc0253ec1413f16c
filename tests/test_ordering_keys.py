"""Ordering keys where they are made: publish() and publish_many() validate and keep them, model
hooks give each object its own key, and fan-out numbers each endpoint's chain and parks all but
its head (PostgreSQL, no worker: the send path is tests/test_ordering.py)."""

import pytest
from django.db import transaction

from deliveries import PublishError, publish, publish_many
from deliveries.fanout import fan_out_events
from deliveries.models import Delivery, Event, OrderingKey, ParkedReason
from endpoints.models import Endpoint
from tests.hostapp.models import Customer, Order

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("key", ["", "x" * 201, "ordre-\u00e9", "a\nb", "a\x00b", 7, b"order-7"])
def test_an_ordering_key_that_cannot_be_sent_in_a_header_is_refused_and_nothing_is_written(key):
    with pytest.raises(PublishError, match="ordering_key must be a string of 1 to 200 printable ASCII"):
        publish("order.updated", {}, ordering_key=key)
    with pytest.raises(PublishError, match=r"events\[1\]: ordering_key"):
        publish_many([("order.updated", {}), {"type": "order.updated", "data": {}, "ordering_key": key}])
    assert not Event.objects.exists()


def test_publish_many_keeps_the_input_order_of_one_key_even_when_created_at_ties():
    events = publish_many(
        [{"type": "order.updated", "data": {"n": n}, "ordering_key": "order-7"} for n in range(50)], tenant="t"
    )
    stored = Event.objects.filter(ordering_key="order-7").order_by("created_at", "id")
    assert [event.payload["n"] for event in stored] == list(range(50))
    assert [event.pk for event in stored] == [event.pk for event in events]


def test_fan_out_numbers_each_endpoint_chain_and_parks_all_but_its_head():
    first = Endpoint.objects.create(url="https://a.example.com/hook")
    second = Endpoint.objects.create(url="https://b.example.com/hook", event_types=["order.updated"])
    with transaction.atomic():
        events = [publish("order.updated", {"n": n}, ordering_key="order-7") for n in range(3)]
        events.append(publish("order.created", {}, ordering_key="order-7"))  # only `first` takes it
        events.append(publish("order.updated", {}, ordering_key="order-8"))
        events.append(publish("order.updated", {}))
    # The fan-out of the third event brings along the first two: the chain is in publish order.
    fan_out_events([str(events[2].pk)])
    fan_out_events([str(event.pk) for event in events])

    def chain(endpoint, key):
        rows = Delivery.objects.filter(endpoint=endpoint, ordering_key=key).order_by("sequence")
        return [(row.event_id, row.sequence, row.parked_reason, row.next_attempt_at is None) for row in rows]

    assert chain(first, "order-7") == [
        (events[0].pk, 1, "", False),
        (events[1].pk, 2, ParkedReason.ORDERING, True),
        (events[2].pk, 3, ParkedReason.ORDERING, True),
        (events[3].pk, 4, ParkedReason.ORDERING, True),
    ]
    assert [row[:2] for row in chain(second, "order-7")] == [(events[0].pk, 1), (events[1].pk, 2), (events[2].pk, 3)]
    assert chain(first, "order-8") == [(events[4].pk, 1, "", False)]
    unordered = Delivery.objects.get(endpoint=first, event=events[5])
    assert (unordered.ordering_key, unordered.sequence, unordered.parked_reason) == (None, None, "")
    assert dict(OrderingKey.objects.filter(endpoint=first).values_list("key", "last_sequence")) == {
        "order-7": 4,
        "order-8": 1,
    }


@pytest.mark.django_db(transaction=True)  # each save commits, as in a web request: no coalescing across them
def test_a_model_hook_gives_each_object_its_own_key():
    customer = Customer.objects.create(name="Ada")
    with transaction.atomic():
        order = Order.objects.create(tenant="acme", customer=customer, status="paid")
    with transaction.atomic():
        order.status = "shipped"
        order.save()
    other = Order.objects.create(tenant="acme", customer=customer, status="paid")
    keys = list(Event.objects.order_by("created_at").values_list("type", "ordering_key"))
    assert keys == [
        ("order.created", f"hostapp.order:{order.pk}"),
        ("order.updated", f"hostapp.order:{order.pk}"),
        ("order.created", f"hostapp.order:{other.pk}"),
    ]
