"""Idempotency-Key on the customers' API's POSTs: a repeat within 24 h gets the first answer and
does nothing twice; another request under the same key is refused; answers showing a secret are
stored encrypted; retention drops keys after 24 h."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deliveries.models import ApiIdempotencyKey, Delivery, DeliveryStatus, Event
from deliveries.retention import purge_old_deliveries
from endpoints.models import Endpoint
from tests.api_helpers import API, client_for
from tests.operators import make_delivery

NEW_ENDPOINT = {"url": "https://acme.example.com/hook", "event_types": ["order.*"]}


def post(client, route: str, body: dict | None = None, key: str | None = "key-1"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(API + route, body, format="json", **headers)


@pytest.mark.django_db
def test_a_repeated_create_returns_the_first_answer_and_creates_one_endpoint():
    acme = client_for("acme-alice")

    first = post(acme, "endpoints/", NEW_ENDPOINT)
    again = post(acme, "endpoints/", NEW_ENDPOINT)

    assert first.status_code == again.status_code == 201, first.content
    assert again.json() == first.json() and first.json()["secret"].startswith("whsec_")
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Endpoint.objects.count() == 1
    # without the header, every POST acts
    assert post(acme, "endpoints/", NEW_ENDPOINT, key=None).status_code == 201
    assert Endpoint.objects.count() == 2


@pytest.mark.django_db
def test_the_stored_answer_holds_no_secret_in_clear():
    acme = client_for("acme-alice")
    created = post(acme, "endpoints/", NEW_ENDPOINT).json()
    rotated = post(acme, f"endpoints/{created['id']}/rotate-secret/", {"grace_seconds": 60}, key="rotate-1").json()

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiIdempotencyKey._meta.db_table}")
        raw = repr(cursor.fetchall())

    assert created["secret"][6:] not in raw and rotated["secret"][6:] not in raw and "whsec_" not in raw
    # and a repeat of the rotation shows the same new secret, without rotating again
    secrets = Endpoint.objects.get(pk=created["id"]).secrets.count()
    assert post(acme, f"endpoints/{created['id']}/rotate-secret/", {"grace_seconds": 60}, key="rotate-1").json() == (
        rotated
    )
    assert Endpoint.objects.get(pk=created["id"]).secrets.count() == secrets


@pytest.mark.django_db
def test_the_same_key_with_another_body_or_route_is_refused_and_does_nothing():
    acme = client_for("acme-alice")
    created = post(acme, "endpoints/", NEW_ENDPOINT).json()

    other_body = post(acme, "endpoints/", {**NEW_ENDPOINT, "url": "https://acme.example.com/other"})
    other_route = post(acme, f"endpoints/{created['id']}/test-event/")

    assert other_body.status_code == other_route.status_code == 422
    assert other_body.json()["detail"].startswith(
        f"Idempotency-Key 'key-1' was already used for another request (POST {API}endpoints/"
    )
    assert Endpoint.objects.count() == 1 and not Delivery.objects.exists()


@pytest.mark.django_db
def test_keys_are_per_tenant():
    post(client_for("acme-alice"), "endpoints/", NEW_ENDPOINT)

    theirs = post(client_for("globex-bob"), "endpoints/", NEW_ENDPOINT)

    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs
    assert sorted(Endpoint.objects.values_list("tenant", flat=True)) == ["acme", "globex"]


@pytest.mark.django_db
def test_a_repeated_test_event_replay_or_retry_acts_once():
    acme = client_for("acme-alice")
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")
    failed = make_delivery(endpoint)
    since = {"since": (timezone.now() - timedelta(hours=1)).isoformat()}

    tests = [post(acme, f"endpoints/{endpoint.pk}/test-event/", key="t") for _ in range(2)]
    replays = [post(acme, f"endpoints/{endpoint.pk}/replay/", since, key="r") for _ in range(2)]

    assert tests[0].json() == tests[1].json() and Event.objects.filter(type="webhook.test").count() == 1
    assert replays[0].json() == replays[1].json() and replays[0].json()["queued_ids"] == [failed.pk]
    # a retry refused (already pending after the replay) is not kept: the same key works once it is failed again
    assert post(acme, f"deliveries/{failed.pk}/retry/", key="x").status_code == 202
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.SUCCEEDED)
    refused = post(acme, f"deliveries/{failed.pk}/retry/", key="y")
    assert refused.status_code == 409
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.FAILED)
    assert post(acme, f"deliveries/{failed.pk}/retry/", key="y").status_code == 202
    assert ApiIdempotencyKey.objects.count() == 4


@pytest.mark.django_db
def test_a_key_longer_than_255_characters_is_a_field_error():
    response = post(client_for("acme-alice"), "endpoints/", NEW_ENDPOINT, key="k" * 256)

    assert response.status_code == 400
    assert response.json() == {"Idempotency-Key": ["Use 1 to 255 characters."]}
    assert not Endpoint.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_identical_requests_at_once_create_one_endpoint():
    clients = [client_for("acme-alice"), client_for("acme-alice")]
    start = threading.Barrier(2)
    answers = [None, None]

    def send(index: int) -> None:
        try:
            start.wait()
            answers[index] = post(clients[index], "endpoints/", NEW_ENDPOINT, key="same")
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json() == answers[1].json()
    assert sum("Idempotent-Replayed" in answer for answer in answers) == 1
    assert Endpoint.objects.count() == 1


@pytest.mark.django_db
def test_retention_drops_keys_older_than_24_hours():
    acme = client_for("acme-alice")
    post(acme, "endpoints/", NEW_ENDPOINT, key="old")
    post(acme, "endpoints/", {**NEW_ENDPOINT, "url": "https://acme.example.com/new"}, key="new")
    ApiIdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))

    assert purge_old_deliveries(report_only=True).idempotency_keys == 1
    report = purge_old_deliveries()

    assert report.idempotency_keys == 1
    assert list(ApiIdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    # and an expired key is a new request again
    assert post(acme, "endpoints/", NEW_ENDPOINT, key="old").status_code == 201
    assert Endpoint.objects.count() == 3


@pytest.mark.django_db
def test_the_schema_documents_the_header_and_its_answers():
    paths = client_for("acme-alice").get(API + "schema/", HTTP_ACCEPT="application/json").json()["paths"]

    for route in (
        "endpoints/",
        "endpoints/{id}/rotate-secret/",
        "endpoints/{id}/test-event/",
        "deliveries/{id}/retry/",
        "deliveries/{id}/cancel/",
    ):
        operation = paths[API + route]["post"]
        assert "Idempotency-Key" in {p["name"] for p in operation["parameters"] if p["in"] == "header"}, route
        assert {"400", "409", "422"} <= set(operation["responses"]), route


@pytest.mark.django_db
def test_an_answer_stored_under_a_key_since_removed_is_a_409_not_a_second_create():
    acme = client_for("acme-alice")
    post(acme, "endpoints/", NEW_ENDPOINT)
    ApiIdempotencyKey.objects.update(response_body="gAAAAAB-a-token-under-a-removed-key")

    again = post(acme, "endpoints/", NEW_ENDPOINT)

    assert again.status_code == 409
    assert "its answer can no longer be read" in again.json()["detail"]
    assert Endpoint.objects.count() == 1
