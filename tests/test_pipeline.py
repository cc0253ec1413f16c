"""The pipeline end to end: publish -> fan-out -> signed POST, on PostgreSQL, Redis, a real
worker and a real receiver."""

import json

import pytest
import standardwebhooks
import stripe
import svix.webhooks
from django.db import transaction

from deliveries import publish
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from endpoints.models import Endpoint, SignatureScheme
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def all_succeeded(event: Event, count: int):
    def check():
        statuses = list(event.deliveries.values_list("status", flat=True))
        return len(statuses) == count and all(s == DeliveryStatus.SUCCEEDED for s in statuses)

    return check


def test_event_reaches_every_subscribed_endpoint_of_its_tenant_only(celery_worker, receiver):
    # Given three endpoints of tenant "acme" (all types, order.*, an exact type), one of acme
    # subscribed to other types, and one of another tenant
    Endpoint.objects.create(url=receiver.url("/all"), tenant="acme")
    Endpoint.objects.create(url=receiver.url("/orders"), tenant="acme", event_types=["order.*"])
    Endpoint.objects.create(url=receiver.url("/exact"), tenant="acme", event_types=["invoice.paid", "order.paid"])
    Endpoint.objects.create(url=receiver.url("/invoices"), tenant="acme", event_types=["invoice.*"])
    Endpoint.objects.create(url=receiver.url("/other-tenant"), tenant="globex")

    # When an order.paid event of acme is published
    with transaction.atomic():
        event = publish("order.paid", {"order": 1}, tenant="acme")

    # Then exactly the three matching acme endpoints receive it, once each
    wait_until(all_succeeded(event, 3))
    paths = sorted(r.path for r in receiver.received())
    assert paths == ["/all", "/exact", "/orders"]
    body = json.loads(receiver.received()[0].body)
    assert body["type"] == "order.paid"
    assert body["data"] == {"order": 1}
    assert body["id"] == event.webhook_id


def test_every_request_verifies_with_standardwebhooks_and_svix(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    event = publish("order.paid", {"order": 2, "note": "café ☕"})

    [request] = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["webhook-id"] == event.webhook_id
    assert headers["content-type"] == "application/json"
    verified = standardwebhooks.Webhook(endpoint.secret).verify(request.body, headers)
    assert verified["data"] == {"order": 2, "note": "café ☕"}
    svix.webhooks.Webhook(endpoint.secret).verify(request.body, headers)


def test_two_live_secrets_both_sign_during_rotation(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    old_secret = endpoint.secret
    new_secret = endpoint.rotate_secret()
    assert endpoint.secret == new_secret != old_secret

    publish("order.paid", {"order": 3})

    [request] = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert len(headers["webhook-signature"].split(" ")) == 2
    # a receiver that knows only the old secret, or only the new one, accepts it
    for secret in (old_secret, new_secret):
        standardwebhooks.Webhook(secret).verify(request.body, headers)
        svix.webhooks.Webhook(secret).verify(request.body, headers)


def test_timestamped_hex_scheme_verifies_with_stripe(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), signature_scheme=SignatureScheme.TIMESTAMPED_HEX)
    old_secret = endpoint.secret
    new_secret = endpoint.rotate_secret()
    event = publish("order.paid", {"order": 4})

    [request] = receiver.wait_for(1)
    assert request.headers["X-Webhook-Id"] == event.webhook_id
    for secret in (old_secret, new_secret):
        verified = stripe.Webhook.construct_event(request.body.decode(), request.headers["X-Webhook-Signature"], secret)
        assert verified["data"]["order"] == 4


def test_custom_headers_are_sent_and_cannot_replace_ours(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), headers={"Authorization": "Bearer t0k"})
    # Even a header stored behind validation's back never replaces a signature.
    Endpoint.objects.filter(pk=endpoint.pk).update(headers={"Authorization": "Bearer t0k", "webhook-signature": "x"})
    publish("order.paid", {"order": 5})

    [request] = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == "Bearer t0k"
    standardwebhooks.Webhook(endpoint.secret).verify(request.body, headers)
    # The attempt record keeps the headers for operators, without credentials or signatures.
    wait_until(DeliveryAttempt.objects.exists)
    recorded = {k.lower(): v for k, v in DeliveryAttempt.objects.get().request_headers.items()}
    assert recorded["authorization"] == recorded["webhook-signature"] == "[redacted]"
    assert recorded["webhook-id"] == headers["webhook-id"]


def test_rolled_back_transaction_sends_nothing(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    with pytest.raises(RuntimeError), transaction.atomic():
        publish("order.paid", {"order": "rolled-back"})
        raise RuntimeError("host code failed after publishing")
    # A committed event published after it arrives; the rolled-back one never does.
    committed = publish("order.paid", {"order": "committed"})

    wait_until(all_succeeded(committed, 1))
    assert [json.loads(r.body)["data"]["order"] for r in receiver.received()] == ["committed"]
    assert Event.objects.count() == 1


def test_duplicate_idempotency_key_sends_once(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/hook"))

    first = publish("order.paid", {"order": 6}, idempotency_key="order-6-paid")
    second = publish("order.paid", {"order": 6}, idempotency_key="order-6-paid")
    third = publish("order.paid", {"order": 7}, idempotency_key="order-7-paid")

    assert second.pk == first.pk
    wait_until(all_succeeded(third, 1))
    wait_until(all_succeeded(first, 1))
    assert sorted(json.loads(r.body)["data"]["order"] for r in receiver.received()) == [6, 7]
    assert Delivery.objects.count() == 2


def test_response_body_and_headers_are_stored_capped(celery_worker, receiver):
    # Given a receiver answering with a 100 kB body and a 5 kB header
    receiver.script("/hook", [(200, {"X-Big": "h" * 5000}, b"b" * 100_000)])
    Endpoint.objects.create(url=receiver.url("/hook"))

    event = publish("order.paid", {"order": 8})

    wait_until(all_succeeded(event, 1))
    attempt = DeliveryAttempt.objects.get()
    assert attempt.response_body == "b" * 20 * 1024
    assert attempt.response_headers["X-Big"] == "h" * 1000
