"""Why a pending delivery waits, through the customers' API: each delivery's `ordering_key`,
`sequence` and `waiting` (the reason admin shows, until when, and for an ordering wait the
delivery it waits for), the `waiting=` filter, and each event's ordering key. Deliveries are
written in each state as deliveries.scheduling and deliveries.ordering leave them."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from deliveries.backlog import Waiting
from deliveries.models import Delivery, DeliveryStatus, Event
from endpoints.models import Endpoint
from tests.api_helpers import API, client_for
from tests.operators import make_chain, make_delivery, make_waiting

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return client_for("acme-alice")


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")


def listed(client, **params) -> dict[int, dict]:
    response = client.get(API + "deliveries/", params)
    assert response.status_code == 200, response.content
    return {row["id"]: row for row in response.json()["data"]}


def when(text: str | None):
    return parse_datetime(text) if text else None


def test_each_pending_delivery_says_what_it_waits_for_and_finished_ones_say_null(acme, endpoint):
    # Given a pending delivery in each state that needs no chain, and finished ones
    paused = Endpoint.objects.create(url="https://paused.example.com/hook", tenant="acme")
    paused_until = timezone.now() + timedelta(minutes=3)
    Endpoint.objects.filter(pk=paused.pk).update(paused_until=paused_until)
    states = ["due", "sending", "retry", "rate_limit", "disabled", "unverified", "unrecorded"]
    waiting = {state: make_waiting(endpoint, state) for state in states}
    waiting["breaker"] = make_waiting(paused, "breaker")
    finished = [make_delivery(endpoint, status) for status in ("succeeded", "failed", "cancelled")]

    rows = listed(acme)

    # Then each says its reason, with the time it waits until where one is known
    for state, delivery in waiting.items():
        shown = rows[delivery.pk]["waiting"]
        assert shown["reason"] == state, (state, shown)
        assert shown["blocked_by"] is None
        expected_until = {"retry": delivery.next_attempt_at, "rate_limit": delivery.next_attempt_at}
        expected_until["breaker"] = paused_until
        assert when(shown["until"]) == expected_until.get(state), (state, shown)
    assert {rows[d.pk]["status"]: rows[d.pk]["waiting"] for d in finished} == {
        "succeeded": None,
        "failed": None,
        "cancelled": None,
    }
    # and the detail says the same
    detail = acme.get(API + f"deliveries/{waiting['rate_limit'].pk}/").json()
    assert detail["waiting"] == rows[waiting["rate_limit"].pk]["waiting"]
    assert set(Waiting.values) == {*states, "breaker", "ordering"}


def test_an_ordered_delivery_shows_its_key_sequence_and_the_delivery_it_waits_for(acme, endpoint):
    # Given a chain whose head waits for its retry, and one whose head failed for good
    head, second, third = make_chain(endpoint, "order-7", 3)
    failed_head, behind = make_chain(endpoint, "order-8", 2)
    Delivery.objects.filter(pk=failed_head.pk).update(status=DeliveryStatus.FAILED, next_attempt_at=None)

    rows = listed(acme)

    # Then every delivery of a chain names its key and place; those behind name the head
    assert [(rows[d.pk]["ordering_key"], rows[d.pk]["sequence"]) for d in (head, second, third)] == [
        ("order-7", 1),
        ("order-7", 2),
        ("order-7", 3),
    ]
    assert rows[head.pk]["waiting"] == {
        "reason": "retry",
        "until": rows[head.pk]["next_attempt_at"],
        "blocked_by": None,
    }
    for delivery in (second, third):
        assert rows[delivery.pk]["waiting"] == {"reason": "ordering", "until": None, "blocked_by": head.pk}
    assert rows[failed_head.pk]["waiting"] is None and rows[failed_head.pk]["status"] == "failed"
    assert rows[behind.pk]["waiting"]["blocked_by"] == failed_head.pk
    # the detail looks the head up too
    assert acme.get(API + f"deliveries/{third.pk}/").json()["waiting"]["blocked_by"] == head.pk
    # an unordered delivery has neither
    plain = make_delivery(endpoint)
    assert {k: listed(acme)[plain.pk][k] for k in ("ordering_key", "sequence")} == {
        "ordering_key": None,
        "sequence": None,
    }


def test_a_delivery_behind_a_key_whose_earlier_deliveries_are_gone_waits_for_none(acme, endpoint):
    # Given the rest of a chain whose head was deleted with its event (release_stalled moves it on)
    head, behind = make_chain(endpoint, "order-7", 2)
    head.event.delete()

    assert listed(acme)[behind.pk]["waiting"] == {"reason": "ordering", "until": None, "blocked_by": None}


def test_the_waiting_filter_lists_the_pending_deliveries_waiting_for_that_reason(acme, endpoint):
    head, second, third = make_chain(endpoint, "order-7", 3)
    limited = make_waiting(endpoint, "rate_limit")
    make_delivery(endpoint, DeliveryStatus.FAILED)

    assert list(listed(acme, waiting="ordering")) == [second.pk, third.pk]
    assert list(listed(acme, waiting="retry")) == [head.pk]
    assert list(listed(acme, waiting="rate_limit")) == [limited.pk]
    assert list(listed(acme, waiting="breaker")) == []
    assert list(listed(acme, waiting="ordering", status="failed")) == []
    refused = acme.get(API + "deliveries/", {"waiting": "godot"})
    assert refused.status_code == 400
    assert refused.json() == {"waiting": [f"Use one of: {', '.join(Waiting.values)}."]}


def test_the_waiting_filter_shows_only_the_tenants_own_deliveries(acme, endpoint):
    theirs = Endpoint.objects.create(url="https://globex.example.com/hook", tenant="globex")
    _, their_second = make_chain(theirs, "order-7", 2)
    ours = make_chain(endpoint, "order-7", 2)

    assert list(listed(acme, waiting="ordering")) == [ours[1].pk]
    assert list(listed(client_for("globex-bob"), waiting="ordering")) == [their_second.pk]


def test_events_show_their_ordering_key(acme, endpoint):
    ordered = Event.objects.create(tenant="acme", type="order.updated", payload={}, ordering_key="order-7")
    plain = Event.objects.create(tenant="acme", type="order.updated", payload={})

    keys = {e["id"]: e["ordering_key"] for e in acme.get(API + "events/").json()["data"]}

    assert keys == {ordered.webhook_id: "order-7", plain.webhook_id: None}
    assert acme.get(API + f"events/{ordered.webhook_id}/").json()["ordering_key"] == "order-7"
