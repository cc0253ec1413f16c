"""endpoints/{id}/test-event/, replay/ and health/ of the customers' API: admin's operations for
the tenant's own endpoints, through the real pipeline where they send; and the History record
every change through the API leaves, as admin's actions do."""

from datetime import timedelta

import pytest
import standardwebhooks
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.utils import timezone

from deliveries.models import AttemptTrigger, Delivery, DeliveryStatus
from deliveries.operations import TEST_EVENT_TYPE
from endpoints.models import Endpoint
from tests.api_helpers import API, client_for
from tests.conftest import wait_until
from tests.operators import make_delivery


def history(endpoint_or_pk) -> list[tuple[int, str, str]]:
    pk = getattr(endpoint_or_pk, "pk", endpoint_or_pk)
    entries = LogEntry.objects.filter(object_id=str(pk)).select_related("user").order_by("pk")
    return [(e.action_flag, e.user.username, e.change_message) for e in entries]


@pytest.mark.django_db(transaction=True)
def test_test_event_reaches_only_this_endpoint_signed_and_is_recorded(celery_worker, receiver):
    # Given an acme endpoint subscribed to other types only, and a sibling
    endpoint = Endpoint.objects.create(url=receiver.url("/selected"), tenant="acme", event_types=["invoice.*"])
    Endpoint.objects.create(url=receiver.url("/sibling"), tenant="acme")

    response = client_for("acme-alice").post(API + f"endpoints/{endpoint.pk}/test-event/", format="json")

    # Then a signed webhook.test arrives there only, with the ids the answer names
    assert response.status_code == 202, response.content
    body = response.json()
    [request] = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    sent = standardwebhooks.Webhook(endpoint.secret).verify(request.body, headers)
    assert sent["type"] == TEST_EVENT_TYPE and request.path == "/selected"
    assert headers["webhook-id"] == body["event_id"]
    wait_until(lambda: Delivery.objects.get(pk=body["delivery_id"]).status == DeliveryStatus.SUCCEEDED)
    assert receiver.received("/sibling") == [] and Delivery.objects.count() == 1
    assert history(endpoint) == [(CHANGE, "acme-alice", f"API: Sent a test event (delivery {body['delivery_id']}).")]


@pytest.mark.django_db
def test_test_event_to_a_disabled_endpoint_is_refused():
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")
    endpoint.disable("paused for maintenance")

    response = client_for("acme-alice").post(API + f"endpoints/{endpoint.pk}/test-event/", format="json")

    assert response.status_code == 409
    assert response.json() == {"detail": f"Not sent: endpoint {endpoint.pk} is disabled (paused for maintenance)."}
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_replay_resends_only_this_endpoints_failures_since_the_time(celery_worker, receiver):
    # Given failures before and after the time, a success, and another tenant's failure
    now = timezone.now()
    endpoint = Endpoint.objects.create(url=receiver.url("/acme"), tenant="acme")
    other = Endpoint.objects.create(url=receiver.url("/globex"), tenant="globex")
    early = make_delivery(endpoint, finished_at=now - timedelta(hours=5))
    late = make_delivery(endpoint, finished_at=now - timedelta(hours=1))
    make_delivery(endpoint, DeliveryStatus.SUCCEEDED, finished_at=now - timedelta(hours=1))
    elsewhere = make_delivery(other, finished_at=now - timedelta(hours=1))
    since = (now - timedelta(hours=2)).isoformat()

    response = client_for("acme-alice").post(API + f"endpoints/{endpoint.pk}/replay/", {"since": since}, format="json")

    # Then only the late failure is sent again, with its webhook id, as a replay attempt
    assert response.status_code == 202, response.content
    assert response.json()["queued"] == 1 and response.json()["queued_ids"] == [late.pk]
    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == late.event.webhook_id
    wait_until(lambda: Delivery.objects.get(pk=late.pk).status == DeliveryStatus.SUCCEEDED)
    assert late.attempts.order_by("number").last().trigger == AttemptTrigger.REPLAY
    assert Delivery.objects.get(pk=early.pk).status == DeliveryStatus.FAILED
    assert Delivery.objects.get(pk=elsewhere.pk).status == DeliveryStatus.FAILED
    assert len(receiver.received()) == 1
    [(flag, user, message)] = history(endpoint)
    assert (flag, user) == (CHANGE, "acme-alice") and message.endswith(": 1 delivery queued.")


@pytest.mark.django_db
def test_replay_refuses_a_time_in_the_future_or_none():
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")
    make_delivery(endpoint)
    acme = client_for("acme-alice")
    future = (timezone.now() + timedelta(hours=2)).isoformat()

    response = acme.post(API + f"endpoints/{endpoint.pk}/replay/", {"since": future}, format="json")

    assert response.status_code == 400
    assert response.json() == {"since": ["That time is in the future: nothing can have failed since then."]}
    assert list(acme.post(API + f"endpoints/{endpoint.pk}/replay/", {}, format="json").json()) == ["since"]
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_health_gives_the_success_rate_per_window_the_last_success_and_the_backlog(settings):
    settings.WEBHOOKS_HEALTH_WINDOWS = "900,86400"
    now = timezone.now()
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")
    # in the last 15 min: 1 success (1 attempt) and 1 failure (2 attempts); 2 h ago: 1 failed attempt
    success = make_delivery(endpoint, DeliveryStatus.SUCCEEDED, finished_at=now - timedelta(minutes=5))
    make_delivery(endpoint, attempts=2, finished_at=now - timedelta(minutes=5))
    make_delivery(endpoint, finished_at=now - timedelta(hours=2))
    make_delivery(endpoint, DeliveryStatus.PENDING, attempts=0)
    make_delivery(endpoint, DeliveryStatus.PENDING, attempts=0)
    # another tenant's endpoint with its own traffic counts nowhere
    make_delivery(Endpoint.objects.create(url="https://globex.example.com/hook", tenant="globex"), attempts=3)

    response = client_for("acme-alice").get(API + f"endpoints/{endpoint.pk}/health/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["windows"] == [
        {"seconds": 900, "attempts": 3, "succeeded": 1, "success_rate": pytest.approx(1 / 3)},
        {"seconds": 86400, "attempts": 4, "succeeded": 1, "success_rate": 0.25},
    ]
    assert body["state"] == "active" and body["pending"] == 2 and body["failed"] == 2
    assert body["last_success_at"] == success.updated_at.isoformat().replace("+00:00", "Z")


@pytest.mark.django_db
def test_health_of_an_endpoint_without_attempts_has_no_rate():
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")

    body = client_for("acme-alice").get(API + f"endpoints/{endpoint.pk}/health/").json()

    assert [w["success_rate"] for w in body["windows"]] == [None, None]
    assert (body["last_success_at"], body["pending"], body["failed"]) == (None, 0, 0)


@pytest.mark.django_db
def test_another_tenants_endpoint_is_a_404_and_nothing_is_done():
    endpoint = Endpoint.objects.create(url="https://globex.example.com/hook", tenant="globex")
    failed = make_delivery(endpoint)
    acme = client_for("acme-alice")
    since = {"since": (timezone.now() - timedelta(days=1)).isoformat()}

    answers = [
        acme.post(API + f"endpoints/{endpoint.pk}/test-event/", format="json"),
        acme.post(API + f"endpoints/{endpoint.pk}/replay/", since, format="json"),
        acme.get(API + f"endpoints/{endpoint.pk}/health/"),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404]
    assert answers[0].json() == acme.get(API + "endpoints/999999/health/").json()  # as if it did not exist
    assert list(Delivery.objects.values_list("pk", "status")) == [(failed.pk, DeliveryStatus.FAILED)]
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_every_change_through_the_api_is_in_the_objects_history():
    acme = client_for("acme-alice")

    created = acme.post(API + "endpoints/", {"url": "https://acme.example.com/hook"}, format="json").json()
    acme.patch(API + f"endpoints/{created['id']}/", {"description": "orders", "is_active": False}, format="json")
    acme.post(API + f"endpoints/{created['id']}/rotate-secret/", {"grace_seconds": 3600}, format="json")
    delivery = make_delivery(Endpoint.objects.create(url="https://acme.example.com/2", tenant="acme"))
    retried = acme.post(API + f"deliveries/{delivery.pk}/retry/", format="json")
    deleted = acme.delete(API + f"endpoints/{created['id']}/")

    assert (retried.status_code, deleted.status_code) == (202, 204)
    assert history(created["id"]) == [
        (ADDITION, "acme-alice", "API: Created."),
        (CHANGE, "acme-alice", "API: Changed description, is_active."),
        (CHANGE, "acme-alice", "API: Rotated the signing secret; the old one signs 3600 s more."),
        (DELETION, "acme-alice", "API: Deleted."),
    ]
    assert history(delivery) == [(CHANGE, "acme-alice", "API: Retried now (manual attempt).")]


@pytest.mark.django_db
def test_the_schema_documents_the_operations():
    document = client_for("acme-alice").get(API + "schema/", HTTP_ACCEPT="application/json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]

    assert set(paths[API + "endpoints/{id}/test-event/"]["post"]["responses"]) >= {"202", "404", "409"}
    replay = paths[API + "endpoints/{id}/replay/"]["post"]
    assert set(replay["responses"]) >= {"202", "400", "404"}
    assert schemas["ReplayRequest"]["required"] == ["since"]
    assert set(schemas["ReplayReport"]["properties"]) >= {"queued", "queued_ids", "skipped"}
    health = paths[API + "endpoints/{id}/health/"]["get"]["responses"]["200"]
    assert health["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Health"}
    assert set(schemas["Health"]["properties"]) == {"state", "windows", "last_success_at", "pending", "failed"}
