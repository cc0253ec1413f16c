"""deliveries/{id}/cancel/ of the customers' API: the admin's Cancel for the tenant's own
deliveries. A pending or failed delivery is not sent, the next delivery of its ordering key goes
out (through the real pipeline), the change is in the delivery's History; a succeeded, cancelled
or in-flight delivery is refused (409, saying why) and left as it was."""

import json
from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db import transaction
from django.utils import timezone

from deliveries import publish
from deliveries.models import ApiIdempotencyKey, Delivery, DeliveryStatus
from endpoints.models import Endpoint
from tests.api_helpers import API, client_for
from tests.conftest import wait_until
from tests.operators import make_chain, make_delivery, make_waiting

HISTORY = "API: Cancelled (not to be sent)."


def history(delivery: Delivery) -> list[tuple[int, str, str]]:
    entries = LogEntry.objects.filter(object_id=str(delivery.pk)).select_related("user").order_by("pk")
    return [(e.action_flag, e.user.username, e.change_message) for e in entries]


def cancel(client, delivery: Delivery, **headers):
    return client.post(API + f"deliveries/{delivery.pk}/cancel/", format="json", headers=headers or None)


def chain(key: str) -> list[Delivery]:
    return list(Delivery.objects.filter(ordering_key=key).order_by("sequence"))


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_head_that_failed_for_good_sends_the_rest_of_its_key_in_order(celery_worker, receiver, settings):
    # Given an acme endpoint that refuses the head of key order-9 until retries give up
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.1"
    receiver.script("/hook", [(500, {}, b"no"), (500, {}, b"no"), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"), tenant="acme")
    for n in range(3):
        with transaction.atomic():
            publish("order.updated", {"n": n}, tenant="acme", ordering_key="order-9")
    blocked = [DeliveryStatus.FAILED, DeliveryStatus.PENDING, DeliveryStatus.PENDING]
    wait_until(lambda: [d.status for d in chain("order-9")] == blocked, 30, "the head failed for good")
    head, second, third = chain("order-9")
    acme = client_for("acme-alice")

    # Then the API shows the rest of the key waiting behind that head
    rows = {d["id"]: d for d in acme.get(API + "deliveries/?waiting=ordering").json()["data"]}
    assert list(rows) == [second.pk, third.pk]
    assert {d["waiting"]["blocked_by"] for d in rows.values()} == {head.pk}

    # When the customer cancels the head through the API
    response = cancel(acme, head)

    # Then it is cancelled, recorded, and the next two are sent, in order
    assert response.status_code == 200, response.content
    assert response.json() == {
        "cancelled": True,
        "detail": f"Delivery {head.pk} cancelled: it will not be sent, and the next delivery of its ordering key "
        f"'order-9', if any, goes out (POST deliveries/{head.pk}/retry/ sends it after all).",
    }
    wait_until(
        lambda: (
            [d.status for d in chain("order-9")]
            == [DeliveryStatus.CANCELLED, DeliveryStatus.SUCCEEDED, DeliveryStatus.SUCCEEDED]
        ),
        30,
    )
    assert [json.loads(r.body)["data"]["n"] for r in receiver.received("/hook")] == [0, 0, 1, 2]
    assert history(head) == [(CHANGE, "acme-alice", HISTORY)]
    assert acme.get(API + f"deliveries/{head.pk}/").json()["status"] == "cancelled"


@pytest.mark.django_db
def test_cancelling_a_pending_delivery_finishes_it_unsent_and_releases_the_next_of_its_key(endpoint):
    # Given a chain whose head waits for its retry
    head, second, third = make_chain(endpoint, "order-7", 3)
    acme = client_for("acme-alice")

    response = cancel(acme, head)

    # Then the head is cancelled, waits for nothing, and the second is due now; the third still waits
    assert response.status_code == 200, response.content
    shown = acme.get(API + f"deliveries/{head.pk}/").json()
    assert (shown["status"], shown["waiting"], shown["next_attempt_at"]) == ("cancelled", None, None)
    rows = {d["id"]: d for d in acme.get(API + "deliveries/").json()["data"]}
    assert rows[second.pk]["waiting"]["reason"] == "due"
    assert rows[third.pk]["waiting"] == {"reason": "ordering", "until": None, "blocked_by": second.pk}
    assert history(head) == [(CHANGE, "acme-alice", HISTORY)]


@pytest.mark.django_db
def test_an_unordered_delivery_is_cancelled_with_a_detail_that_names_no_key(endpoint):
    delivery = make_delivery(endpoint, DeliveryStatus.FAILED)

    response = cancel(client_for("acme-alice"), delivery)

    assert response.status_code == 200
    assert response.json()["detail"] == (
        f"Delivery {delivery.pk} cancelled: it will not be sent (POST deliveries/{delivery.pk}/retry/ sends it "
        "after all)."
    )
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.CANCELLED


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("succeeded", "already succeeded or cancelled"),
        ("cancelled", "already succeeded or cancelled"),
        ("sending", "being sent right now"),
    ],
)
def test_a_delivery_that_cannot_be_cancelled_is_refused_saying_why_and_left_alone(endpoint, state, reason):
    if state == "sending":
        delivery = make_waiting(endpoint, "sending")
    else:
        delivery = make_delivery(endpoint, state)
    before = Delivery.objects.values().get(pk=delivery.pk)

    response = cancel(client_for("acme-alice"), delivery)

    assert response.status_code == 409
    assert response.json() == {"detail": f"Delivery {delivery.pk} was not cancelled: {reason}."}
    assert Delivery.objects.values().get(pk=delivery.pk) == before
    assert history(delivery) == []


@pytest.mark.django_db
def test_a_repeated_cancel_with_the_same_key_answers_the_same_and_acts_once(endpoint):
    delivery = make_waiting(endpoint, "retry")
    acme = client_for("acme-alice")

    first = cancel(acme, delivery, **{"Idempotency-Key": "c1"})
    again = cancel(acme, delivery, **{"Idempotency-Key": "c1"})

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert len(history(delivery)) == 1 and ApiIdempotencyKey.objects.count() == 1
    # without a key, a second cancel is refused: it is cancelled already
    assert cancel(acme, delivery).status_code == 409


@pytest.mark.django_db
def test_a_cancelled_delivery_can_be_retried_after_all(endpoint):
    delivery = make_waiting(endpoint, "retry", next_attempt_at=timezone.now() + timedelta(hours=1))
    acme = client_for("acme-alice")
    assert cancel(acme, delivery).status_code == 200

    retried = acme.post(API + f"deliveries/{delivery.pk}/retry/", format="json")

    assert retried.status_code == 202, retried.content
    assert acme.get(API + f"deliveries/{delivery.pk}/").json()["waiting"]["reason"] == "due"
