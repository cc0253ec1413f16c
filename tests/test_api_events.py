"""events/, event-types/ and deliveries/ of the customers' API: the event list a receiver
reconciles with (cursor, filters), one event with its deliveries, the catalog, deliveries with
their attempts, and retry (the admin's rules)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event
from endpoints.models import Endpoint, VerificationStatus
from tests.api_helpers import API, client_for, tenant_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return client_for("acme-alice")


def make_events(count: int, tenant: str = "acme", start=None, **fields) -> list[Event]:
    """`count` events of `tenant`, one second apart (ties are tested separately)."""
    start = start or timezone.now() - timedelta(hours=1)
    events = Event.objects.bulk_create(
        [Event(tenant=tenant, type=fields.get("type", "order.paid"), payload={"n": n}) for n in range(count)]
    )
    for n, event in enumerate(events):
        event.created_at = start + timedelta(seconds=n)
    Event.objects.bulk_update(events, ["created_at"])
    return events


def test_events_list_oldest_first_and_the_cursor_walks_every_page_exactly_once(acme):
    events = make_events(7)
    # three share one timestamp: the id breaks the tie, so no page skips or repeats one
    Event.objects.filter(pk__in=[e.pk for e in events[2:5]]).update(created_at=events[2].created_at)
    expected = [e.webhook_id for e in Event.objects.order_by("created_at", "pk")]
    seen, url = [], API + "events/?limit=2"
    while url:
        page = acme.get(url).json()
        assert len(page["data"]) <= 2
        seen += [e["id"] for e in page["data"]]
        url = page["next"]
    assert seen == expected
    after = acme.get(API + f"events/?after={expected[3]}").json()
    assert [e["id"] for e in after["data"]] == expected[4:] and after["has_more"] is False and after["next"] is None


def test_events_filter_by_type_and_time_and_refuse_bad_parameters(acme):
    start = timezone.now() - timedelta(hours=1)
    paid = make_events(3, start=start)
    refunded = make_events(2, start=start + timedelta(seconds=10), type="order.refunded")
    listed = acme.get(API + "events/", {"type": "order.refunded"}).json()["data"]
    assert [e["id"] for e in listed] == [e.webhook_id for e in refunded]
    window = {"since": (start + timedelta(seconds=1)).isoformat(), "until": (start + timedelta(seconds=11)).isoformat()}
    listed = acme.get(API + "events/", window).json()["data"]
    assert [e["id"] for e in listed] == [paid[1].webhook_id, paid[2].webhook_id, refunded[0].webhook_id]
    for params, field in [
        ({"since": "yesterday"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"after": "42"}, "after"),
    ]:
        response = acme.get(API + "events/", params)
        assert response.status_code == 400 and list(response.json()) == [field], (params, response.content)


def test_an_event_reads_with_its_exact_payload_and_its_delivery_to_each_endpoint(acme):
    rows = tenant_rows("acme")
    other = Endpoint.objects.create(url="https://acme.example.com/second", tenant="acme")
    Delivery.objects.create(event=rows["event"], endpoint=other, status=DeliveryStatus.PENDING)
    response = acme.get(API + f"events/{rows['event'].webhook_id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == rows["event"].webhook_id and body["type"] == "order.paid"
    # payload_json, not jsonb: the publisher's key order ("order" before "total")
    assert list(body["data"]) == ["order", "total"]
    assert [(d["endpoint_id"], d["status"]) for d in body["deliveries"]] == [
        (rows["endpoint"].pk, "failed"),
        (other.pk, "pending"),
    ]
    assert acme.get(API + "events/evt_nothex/").status_code == 404


def test_event_types_list_the_catalog_with_descriptions_and_schemas(acme, settings):
    assert acme.get(API + "event-types/").json() == {"data": [], "has_more": False, "next": None}
    schema = {"type": "object", "required": ["order"]}
    settings.WEBHOOKS_EVENT_TYPES = {"order.paid": {"description": "Paid.", "schema": schema}, "order.created": None}
    first = acme.get(API + "event-types/?limit=1").json()
    assert first["data"] == [{"type": "order.created", "description": "", "schema": None}] and first["has_more"]
    second = acme.get(first["next"]).json()
    assert second == {
        "data": [{"type": "order.paid", "description": "Paid.", "schema": schema}],
        "has_more": False,
        "next": None,
    }


def test_deliveries_filter_by_endpoint_event_and_status_and_read_with_attempts(acme):
    first, second = tenant_rows("acme"), tenant_rows("acme", failed=False)
    listed = acme.get(API + "deliveries/").json()["data"]
    assert [d["id"] for d in listed] == [first["delivery"].pk, second["delivery"].pk]
    assert listed[0]["event_id"] == first["event"].webhook_id and listed[0]["event_type"] == "order.paid"
    by = lambda **params: [d["id"] for d in acme.get(API + "deliveries/", params).json()["data"]]  # noqa: E731
    assert by(endpoint=second["endpoint"].pk) == [second["delivery"].pk]
    assert by(event=first["event"].webhook_id) == [first["delivery"].pk]
    assert by(status="succeeded") == [second["delivery"].pk]
    assert acme.get(API + "deliveries/", {"status": "lost"}).json() == {
        "status": ["Use one of: pending, succeeded, failed, cancelled."]
    }
    Delivery.objects.filter(pk=first["delivery"].pk).update(status=DeliveryStatus.CANCELLED)
    assert by(status="cancelled") == [first["delivery"].pk]
    assert acme.get(API + f"deliveries/{first['delivery'].pk}/").json()["status"] == "cancelled"
    detail = acme.get(API + f"deliveries/{first['delivery'].pk}/").json()
    assert [a["number"] for a in detail["attempts"]] == [1]
    assert detail["attempts"][0]["request_headers"] == {
        "webhook-signature": "[redacted]",
        "Authorization": "[redacted]",
    }


def test_retry_queues_a_failed_delivery_and_refuses_a_succeeded_one_saying_why(acme):
    failed, succeeded = tenant_rows("acme"), tenant_rows("acme", failed=False)
    response = acme.post(API + f"deliveries/{failed['delivery'].pk}/retry/")
    assert response.status_code == 202 and response.json()["queued"] is True
    delivery = Delivery.objects.get(pk=failed["delivery"].pk)
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at is not None
    response = acme.post(API + f"deliveries/{succeeded['delivery'].pk}/retry/")
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]


def test_retry_to_an_endpoint_awaiting_verification_says_it_waits_for_the_handshake(acme):
    rows = tenant_rows("acme")
    Endpoint.objects.filter(pk=rows["endpoint"].pk).update(verification_status=VerificationStatus.UNVERIFIED)

    response = acme.post(API + f"deliveries/{rows['delivery'].pk}/retry/")

    assert response.status_code == 202
    assert response.json()["detail"] == (
        f"Delivery {rows['delivery'].pk} queued: attempt 2 waits until the endpoint answers the verification handshake."
    )
