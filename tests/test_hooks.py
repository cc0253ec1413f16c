"""Model hooks: saves and deletes of host models arrive as webhooks, once per transaction, only
after commit. On PostgreSQL, Redis, a real worker and a real receiver; the host models are in
tests/hostapp (Order wired in tests/settings.py, Shipment with the decorator)."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from django.core import serializers
from django.core.files.base import ContentFile
from django.db import transaction

from deliveries import PublishError
from deliveries.models import Event
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.hostapp.models import Customer, Order, Shipment

pytestmark = pytest.mark.django_db(transaction=True)


def bodies(receiver, count: int) -> list[dict]:
    """The JSON bodies of the first `count` requests, in arrival order."""
    return [json.loads(request.body) for request in receiver.wait_for(count)]


def settled(receiver, count: int) -> list[dict]:
    """Exactly `count` requests once every committed event was fanned out and sent."""
    wait_until(lambda: not Event.objects.filter(fanned_out_at__isnull=True).exists())
    wait_until(lambda: not Event.objects.filter(deliveries__status="pending").exists())
    received = [json.loads(request.body) for request in receiver.received()]
    assert len(received) == count, [(body["type"], body["data"]) for body in received]
    return received


def test_created_order_arrives_with_its_fields_as_json(celery_worker, receiver):
    # Given an endpoint of tenant acme and a customer
    Endpoint.objects.create(url=receiver.url("/hook"), tenant="acme")
    customer = Customer.objects.create(name="Ada")

    # When an order of acme is created
    with transaction.atomic():
        order = Order(
            tenant="acme",
            customer=customer,
            reference=UUID("12345678-1234-5678-1234-567812345678"),
            total=Decimal("12.50"),
            placed_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
            ships_on=date(2026, 1, 9),
        )
        order.invoice.save("inv-1.pdf", ContentFile(b"%PDF"), save=False)
        order.save()

    # Then order.created arrives with every field as plain JSON
    [body] = bodies(receiver, 1)
    assert body["type"] == "order.created"
    assert body["data"] == {
        "id": order.pk,
        "reference": "12345678-1234-5678-1234-567812345678",
        "tenant": "acme",
        "customer_id": customer.pk,
        "status": "new",
        "total": "12.50",
        "placed_at": "2026-01-02T03:04:05.678Z",
        "ships_on": "2026-01-09",
        "invoice": "https://files.example.com/invoices/inv-1.pdf",
    }


def test_updated_order_arrives_as_order_updated(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"), event_types=["order.updated"])
    order = Order.objects.create(total=Decimal("1.00"))

    order.status = "paid"
    order.save()

    [body] = bodies(receiver, 1)
    assert body["type"] == "order.updated"
    assert body["data"]["id"] == order.pk
    assert body["data"]["status"] == "paid"
    assert body["data"]["invoice"] is None


def test_deleted_order_arrives_with_its_state_before_deletion(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"), event_types=["order.deleted"])
    order = Order.objects.create(status="paid", total=Decimal("7.00"))
    order_id = order.pk

    with transaction.atomic():
        order.delete()

    [body] = bodies(receiver, 1)
    assert body["type"] == "order.deleted"
    assert body["data"]["id"] == order_id
    assert body["data"]["status"] == "paid"
    assert body["data"]["total"] == "7.00"


def test_queryset_delete_sends_one_deleted_event_per_row(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"), event_types=["order.deleted"])
    ids = {Order.objects.create().pk for _ in range(3)}

    Order.objects.all().delete()

    assert {body["data"]["id"] for body in bodies(receiver, 3)} == ids


def test_save_in_a_rolled_back_transaction_arrives_nowhere(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with pytest.raises(RuntimeError), transaction.atomic():
        Order.objects.create(status="rolled-back")
        raise RuntimeError("host code failed after saving")
    committed = Order.objects.create(status="committed")

    [body] = settled(receiver, 1)
    assert body["data"]["id"] == committed.pk
    assert Event.objects.count() == 1


def test_several_saves_in_one_transaction_arrive_as_one_updated_event(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))
    order = Order.objects.create()
    receiver.wait_for(1)  # its order.created

    with transaction.atomic():
        for status in ("picked", "packed", "shipped"):
            order.status = status
            order.save()

    received = settled(receiver, 2)
    assert [body["type"] for body in received] == ["order.created", "order.updated"]
    assert received[1]["data"]["status"] == "shipped"


def test_create_then_updates_in_one_transaction_arrive_as_one_created_event(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with transaction.atomic():
        order = Order.objects.create(total=Decimal("1.00"))
        order.total = Decimal("2.00")
        order.save()
        order.status = "paid"
        order.save(update_fields=["status"])

    [body] = settled(receiver, 1)
    assert body["type"] == "order.created"
    assert (body["data"]["total"], body["data"]["status"]) == ("2.00", "paid")


def test_create_then_delete_in_one_transaction_sends_nothing(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with transaction.atomic():
        order = Order.objects.create()
        order.status = "paid"
        order.save()
        order.delete()
    marker = Order.objects.create(status="marker")

    [body] = settled(receiver, 1)
    assert body["data"]["id"] == marker.pk
    assert Event.objects.count() == 1


def test_update_then_delete_in_one_transaction_sends_only_deleted(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"), event_types=["order.updated", "order.deleted"])
    order = Order.objects.create()

    with transaction.atomic():
        order.status = "cancelled"
        order.save()
        order.delete()

    [body] = settled(receiver, 1)
    assert body["type"] == "order.deleted"
    assert body["data"]["status"] == "cancelled"


def test_saves_in_a_rolled_back_savepoint_are_forgotten(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    # Given an order created in a transaction, then changed in a savepoint that rolls back
    with transaction.atomic():
        order = Order.objects.create(status="new")
        with pytest.raises(RuntimeError), transaction.atomic():
            order.status = "changed-in-savepoint"
            order.save()
            raise RuntimeError
        order.refresh_from_db()

    # Then order.created carries the state that was committed
    [body] = settled(receiver, 1)
    assert (body["type"], body["data"]["status"]) == ("order.created", "new")


def test_delete_in_a_rolled_back_savepoint_does_not_cancel_the_created_event(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with transaction.atomic():
        order = Order.objects.create(status="kept")
        order_id = order.pk
        with pytest.raises(RuntimeError), transaction.atomic():
            order.delete()
            raise RuntimeError

    [body] = settled(receiver, 1)
    assert (body["type"], body["data"]["id"]) == ("order.created", order_id)
    assert Order.objects.filter(pk=order_id).exists()


def test_create_in_a_rolled_back_savepoint_then_again_sends_one_created(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            Order.objects.create(status="first-try")
            raise RuntimeError
        order = Order.objects.create(status="second-try")
        order.status = "second-try-paid"
        order.save()

    [body] = settled(receiver, 1)
    assert (body["type"], body["data"]["status"]) == ("order.created", "second-try-paid")


def test_filter_returning_false_sends_nothing(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    draft = Order.objects.create(status="draft")
    draft.total = Decimal("3.00")
    draft.save()
    published = Order.objects.create(status="new")

    [body] = settled(receiver, 1)
    assert body["data"]["id"] == published.pk


def test_rows_loaded_from_fixtures_send_nothing():
    fixture = '[{"model": "hostapp.order", "pk": 41, "fields": {"status": "paid", "total": "1.00"}}]'

    for loaded in serializers.deserialize("json", fixture):
        loaded.save()  # what loaddata does: a raw save

    assert Order.objects.filter(pk=41).exists()
    assert Event.objects.count() == 0


def test_hook_without_coalescing_sends_every_save(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with transaction.atomic():
        shipment = Shipment.objects.create(carrier="dhl")
        shipment.carrier = "ups"
        shipment.save()

    received = settled(receiver, 2)
    assert sorted((body["type"], body["data"]["carrier"]) for body in received) == [
        ("shipment.created", "DHL"),
        ("shipment.updated", "UPS"),
    ]


def test_serializer_of_the_hook_makes_the_payload(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    shipment = Shipment.objects.create(carrier="dhl")

    [body] = bodies(receiver, 1)
    assert body["data"] == {"shipment": shipment.pk, "carrier": "DHL"}


def test_hook_refused_by_the_catalog_raises_and_writes_nothing(settings):
    # Given a catalog whose order.created schema allows only some statuses
    settings.WEBHOOKS_EVENT_TYPES = {
        "order.created": {"schema": {"type": "object", "properties": {"status": {"enum": ["new", "paid"]}}}},
        "order.updated": {},
        "order.deleted": {},
    }

    # When an order with another status is saved in a transaction
    with pytest.raises(PublishError, match=r"at \$\.status: 'lost' is not one of \['new', 'paid'\]"):
        with transaction.atomic():
            Order.objects.create(status="lost")

    # Then neither the order nor an event was written
    assert Order.objects.count() == 0
    assert Event.objects.count() == 0


def test_update_coalesced_into_a_pending_event_is_validated_too(settings):
    settings.WEBHOOKS_EVENT_TYPES = {
        "order.created": {"schema": {"properties": {"status": {"enum": ["new", "paid"]}}}},
        "order.updated": {},
        "order.deleted": {},
    }

    with pytest.raises(PublishError, match="is not one of"), transaction.atomic():
        order = Order.objects.create(status="new")
        order.status = "lost"
        order.save()

    assert Order.objects.count() == 0
    assert Event.objects.count() == 0
