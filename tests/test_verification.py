"""Endpoint verification (deliveries/verification.py): an endpoint under verification receives
nothing until its URL answers the CloudEvents handshake (OPTIONS with WebHook-Request-Origin,
granted by WebHook-Allowed-Origin); meanwhile its deliveries wait, pending and unspent, and the
handshake is retried with backoff. Real worker, real receiver on 127.0.0.1."""

import socket
import threading

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from deliveries import publish
from deliveries.models import Delivery, DeliveryStatus
from endpoints.models import Endpoint, VerificationStatus
from tests.api_helpers import API, client_for
from tests.conftest import wait_until
from tests.operators import OPERATOR_PERMISSIONS, make_staff

ORIGIN = "sender.example"
GRANT = (200, {"WebHook-Allowed-Origin": ORIGIN}, b"")


@pytest.fixture(autouse=True)
def verification_settings(settings):
    settings.WEBHOOKS_VERIFICATION_ORIGIN = ORIGIN
    settings.WEBHOOKS_VERIFY_API_ENDPOINTS = True


def unverified_endpoint(url: str) -> Endpoint:
    """An endpoint as the customers' API makes it: created, then put under verification."""
    endpoint = Endpoint.objects.create(url=url)
    assert endpoint.require_verification()
    return endpoint


def parked(event) -> Delivery | None:
    """The event's delivery, once it exists and waits parked (pending, no due time)."""
    delivery = event.deliveries.first()
    if delivery is not None and delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at is None:
        return delivery
    return None


def assert_waiting(delivery: Delivery) -> None:
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == (DeliveryStatus.PENDING, 0, None)
    assert not delivery.attempts.exists()


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_that_answers_the_handshake_is_verified_and_then_receives_its_deliveries(celery_worker, receiver):
    # Given a receiver that grants the handshake, but only once the test lets it answer
    gate = threading.Event()

    def grant_when_let(handler) -> None:
        gate.wait(20)
        status, headers, _ = GRANT
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.script_options("/hook", [grant_when_let])

    # When an endpoint requiring verification is created and an event is published for it
    endpoint = unverified_endpoint(receiver.url("/hook"))
    event = publish("order.paid", {"order": 1})

    # Then the handshake is asked for with our origin, and meanwhile the delivery waits unsent
    [options] = receiver.wait_for(1, "/hook", method="OPTIONS")
    assert options.headers["WebHook-Request-Origin"] == ORIGIN
    delivery = wait_until(lambda: parked(event), what="the delivery parked")
    assert receiver.received("/hook") == []
    assert_waiting(delivery)

    # When the receiver grants it, the endpoint is verified and the waiting delivery is sent
    gate.set()
    [post] = receiver.wait_for(1, "/hook")
    assert post.headers["webhook-id"] == event.webhook_id
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)
    endpoint.refresh_from_db()
    assert endpoint.verification_status == VerificationStatus.VERIFIED
    assert endpoint.verified_at is not None

    # And later events go out directly, without another handshake
    publish("order.paid", {"order": 2})
    receiver.wait_for(2, "/hook")
    assert len(receiver.received("/hook", method="OPTIONS")) == 1


REFUSALS = {
    "404": (404, {}, b"not found"),
    "200 without the header": (200, {}, b"ok"),
    "200 for another origin": (200, {"WebHook-Allowed-Origin": "someone-else.example"}, b""),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("answer", REFUSALS.values(), ids=REFUSALS.keys())
def test_an_endpoint_that_does_not_grant_the_handshake_receives_nothing_and_is_asked_again_later(
    celery_worker, receiver, settings, answer
):
    # Given a short backoff, and a receiver that does not grant the handshake
    settings.WEBHOOKS_VERIFICATION_SCHEDULE = "0.2,3"
    receiver.script_options("/hook", [answer])

    # When an endpoint requiring verification gets an event
    endpoint = unverified_endpoint(receiver.url("/hook"))
    event = publish("order.paid", {"order": 1})

    # Then the handshake is asked again, with growing gaps (0.2 s, then 3 s)
    asked = receiver.wait_for(3, "/hook", method="OPTIONS", timeout=30)
    first_gap = asked[1].received_at - asked[0].received_at
    second_gap = asked[2].received_at - asked[1].received_at
    assert first_gap >= 0.2
    assert second_gap >= 3
    assert second_gap > first_gap

    # And no webhook was sent: the delivery waits, pending, with no attempt spent
    assert receiver.received("/hook") == []
    assert_waiting(wait_until(lambda: parked(event)))
    endpoint.refresh_from_db()
    assert endpoint.verification_status == VerificationStatus.UNVERIFIED
    assert endpoint.verification_attempts >= 2
    assert endpoint.verification_error.startswith(f"HTTP {answer[0]}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_a_refused_connection_leaves_the_endpoint_unverified_and_is_tried_again(celery_worker, settings):
    # Given a URL where nothing listens
    settings.WEBHOOKS_VERIFICATION_SCHEDULE = "0.2,0.5"
    endpoint = unverified_endpoint(f"http://127.0.0.1:{closed_port()}/hook")
    event = publish("order.paid", {"order": 1})

    # Then the handshake keeps failing, saying why, and the delivery waits
    wait_until(lambda: Endpoint.objects.get(pk=endpoint.pk).verification_attempts >= 3, timeout=20)
    endpoint.refresh_from_db()
    assert endpoint.verification_status == VerificationStatus.UNVERIFIED
    assert endpoint.verification_error.startswith("ConnectionError:")
    assert_waiting(wait_until(lambda: parked(event)))


@pytest.mark.django_db(transaction=True)
def test_the_handshake_obeys_the_ssrf_guard(celery_worker, receiver, settings):
    # Given an endpoint on the loopback receiver, saved while private networks were allowed
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    receiver.script_options("/hook", [GRANT])

    # When the guard is on and the endpoint is put under verification, with an event waiting
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    endpoint.require_verification()
    event = publish("order.paid", {"order": 1})

    # Then the handshake is refused before connecting, with the reason recorded
    wait_until(lambda: Endpoint.objects.get(pk=endpoint.pk).verification_attempts >= 1)
    endpoint.refresh_from_db()
    assert endpoint.verification_status == VerificationStatus.UNVERIFIED
    assert endpoint.verification_error.startswith("BlockedAddress: refused to connect")
    # And the loopback listener received nothing at all, and the delivery waits unspent
    assert_waiting(wait_until(lambda: parked(event)))
    assert receiver.received(method=None) == []


def operator(*extra: str) -> Client:
    """A logged-in operator with the usual permissions and `extra` ones."""
    client = Client()
    user = User.objects.filter(username=f"operator-{len(extra)}").first()
    client.force_login(user or make_staff(f"operator-{len(extra)}", (*OPERATOR_PERMISSIONS, *extra)))
    return client


def run_endpoint_action(client: Client, action: str, ids: list[int], follow: bool = True):
    data = {"action": action, "_selected_action": [str(i) for i in ids], "index": "0"}
    return client.post(reverse("admin:endpoints_endpoint_changelist"), data, follow=follow)


def waiting_endpoint(receiver, settings) -> tuple[Endpoint, Delivery]:
    """An unverified endpoint whose first handshake was refused (no retry soon), and a delivery waiting for it."""
    settings.WEBHOOKS_VERIFICATION_SCHEDULE = "3600"
    endpoint = unverified_endpoint(receiver.url("/hook"))
    event = publish("order.paid", {"order": 1})
    wait_until(lambda: Endpoint.objects.get(pk=endpoint.pk).verification_attempts == 1)
    return endpoint, wait_until(lambda: parked(event))


@pytest.mark.django_db(transaction=True)
def test_an_operator_waives_verification_and_the_waiting_deliveries_are_sent(celery_worker, receiver, settings):
    # Given an endpoint whose receiver does not answer the handshake, and a delivery waiting
    endpoint, delivery = waiting_endpoint(receiver, settings)

    # When an operator without the verify permission tries to waive it, nothing changes
    assert run_endpoint_action(operator(), "waive_verifications", [endpoint.pk], follow=False).status_code == 403
    assert Endpoint.objects.get(pk=endpoint.pk).verification_status == VerificationStatus.UNVERIFIED

    # When an operator with it waives the verification in admin
    response = run_endpoint_action(operator("endpoints.verify_endpoint"), "waive_verifications", [endpoint.pk])

    # Then the endpoint is waived and its waiting delivery is sent
    assert "Verification waived for 1 endpoint" in response.content.decode()
    [post] = receiver.wait_for(1, "/hook")
    assert post.headers["webhook-id"] == delivery.event.webhook_id
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)
    assert Endpoint.objects.get(pk=endpoint.pk).verification_status == VerificationStatus.WAIVED


@pytest.mark.django_db(transaction=True)
def test_an_operator_verifies_now_and_the_handshake_runs_at_once(celery_worker, receiver, settings):
    # Given an endpoint whose first handshake was refused, the next one an hour away
    endpoint, delivery = waiting_endpoint(receiver, settings)
    assert len(receiver.received("/hook", method="OPTIONS")) == 1

    # When its receiver now grants it and an operator asks to verify it now
    receiver.script_options("/hook", [GRANT])
    response = run_endpoint_action(operator("endpoints.verify_endpoint"), "verify_endpoints", [endpoint.pk])

    # Then the handshake ran during the request, the endpoint is verified and the delivery sent
    assert f"Verified endpoint {endpoint.pk}" in response.content.decode()
    assert len(receiver.received("/hook", method="OPTIONS")) == 2
    assert Endpoint.objects.get(pk=endpoint.pk).verification_status == VerificationStatus.VERIFIED
    receiver.wait_for(1, "/hook")
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)

    # And the list shows the state, filterable by it
    page = operator("endpoints.verify_endpoint").get(
        reverse("admin:endpoints_endpoint_changelist") + "?state=unverified"
    )
    assert page.status_code == 200
    assert receiver.url("/hook") not in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_repointing_a_verified_endpoint_makes_it_unverified_again(celery_worker, receiver):
    # Given a verified endpoint
    receiver.script_options("/hook", [GRANT])
    endpoint = unverified_endpoint(receiver.url("/hook"))
    wait_until(lambda: Endpoint.objects.get(pk=endpoint.pk).verification_status == VerificationStatus.VERIFIED)

    # When its URL is changed to one that does not answer the handshake
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    endpoint.url = receiver.url("/moved")
    endpoint.save()
    event = publish("order.paid", {"order": 1})

    # Then it is unverified again, the new URL is asked, and nothing is sent there
    receiver.wait_for(1, "/moved", method="OPTIONS")
    assert Endpoint.objects.get(pk=endpoint.pk).verification_status == VerificationStatus.UNVERIFIED
    assert_waiting(wait_until(lambda: parked(event)))
    assert receiver.received() == []


@pytest.mark.django_db(transaction=True)
def test_endpoints_created_the_existing_ways_need_no_handshake(celery_worker, receiver, settings):
    # Given an endpoint created in Python (or admin), then re-pointed
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    endpoint.url = receiver.url("/moved")
    endpoint.save()

    # Then it receives at once, without any handshake
    publish("order.paid", {"order": 1})
    receiver.wait_for(1, "/moved")
    assert Endpoint.objects.get(pk=endpoint.pk).verification_status == VerificationStatus.NOT_REQUIRED
    assert receiver.received(method="OPTIONS") == []

    # And with WEBHOOKS_VERIFY_API_ENDPOINTS off, the API's call changes nothing
    settings.WEBHOOKS_VERIFY_API_ENDPOINTS = False
    assert endpoint.require_verification() is False
    assert Endpoint.objects.get(pk=endpoint.pk).verification_status == VerificationStatus.NOT_REQUIRED


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_created_or_repointed_through_the_api_waits_for_the_handshake(celery_worker, receiver):
    # Given a customer of tenant "acme" and a receiver that does not answer the handshake yet
    receiver.script_options("/hook", [(405, {}, b"")])
    client = client_for("acme-alice")

    # When the customer creates an endpoint through the API and an event is published for it
    created = client.post(f"{API}endpoints/", {"url": receiver.url("/hook")}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["verification_status"] == "unverified"
    event = publish("order.paid", {"order": 5}, tenant="acme")

    # Then the handshake is asked for, and the delivery waits unsent
    receiver.wait_for(1, "/hook", method="OPTIONS")
    delivery = wait_until(lambda: parked(event), what="the delivery parked")
    assert receiver.received("/hook") == []
    assert_waiting(delivery)

    # When the customer points it at a URL that grants the handshake
    receiver.script_options("/granted", [GRANT])
    changed = client.patch(f"{API}endpoints/{created.json()['id']}/", {"url": receiver.url("/granted")}, format="json")
    assert changed.status_code == 200, changed.content

    # Then the new URL is asked, verified, and the waiting delivery is sent there
    receiver.wait_for(1, "/granted", method="OPTIONS")
    [post] = receiver.wait_for(1, "/granted")
    assert post.headers["webhook-id"] == event.webhook_id
    assert Endpoint.objects.get(pk=created.json()["id"]).verification_status == VerificationStatus.VERIFIED
