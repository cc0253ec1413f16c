"""Each signature format and preset over real HTTP (PostgreSQL, Redis, a real worker, a real
receiver), verified by a receiver written the way that provider's own documentation writes it,
not by our toolkit: Python's hmac as GitHub's and Shopify's docs show it, the `stripe` package,
the `standardwebhooks` package."""

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import pytest
import standardwebhooks
import stripe
from django.utils import timezone

from deliveries import publish
from deliveries.models import DeliveryAttempt
from endpoints.models import Endpoint
from endpoints.signature_formats import SIGNATURE_PRESETS
from tests.conftest import wait_until
from tests.receiver import ReceivedRequest

pytestmark = pytest.mark.django_db(transaction=True)


def header(request: ReceivedRequest, name: str) -> str:
    """A request header, by name in any case (as a web framework hands it over)."""
    [value] = [v for k, v in request.headers.items() if k.lower() == name.lower()]
    return value


def github_verifies(secret: str, body: bytes, signature_header: str) -> bool:
    """GitHub's documented check: "sha256=" + the hex HMAC of the body, compared in constant time."""
    hash_object = hmac.new(secret.encode("utf-8"), msg=body, digestmod=hashlib.sha256)
    expected_signature = "sha256=" + hash_object.hexdigest()
    return hmac.compare_digest(expected_signature, signature_header)


def shopify_verifies(secret: str, data: bytes, hmac_header: str) -> bool:
    """Shopify's documented check: the base64 HMAC of the body, compared in constant time."""
    digest = hmac.new(secret.encode("utf-8"), data, digestmod=hashlib.sha256).digest()
    computed_hmac = base64.b64encode(digest)
    return hmac.compare_digest(computed_hmac, hmac_header.encode("utf-8"))


def plain_hex_verifies(secret: str, body: bytes, signature: str) -> bool:
    """The plain form: the hex HMAC of the body, nothing around it."""
    return hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(), signature)


def assert_id_and_timestamp_sent(request: ReceivedRequest, event) -> None:
    assert header(request, "X-Webhook-Id") == event.webhook_id == json.loads(request.body)["id"]
    assert abs(int(header(request, "X-Webhook-Timestamp")) - request.received_at) < 60


def test_github_style_verifies_as_githubs_docs_write_it(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), **SIGNATURE_PRESETS["github"].fields())
    event = publish("order.paid", {"order": 1, "note": "café ☕"})

    [request] = receiver.wait_for(1)
    signature = header(request, "X-Hub-Signature-256")
    assert signature.startswith("sha256=")
    assert github_verifies(endpoint.secret, request.body, signature)
    assert not github_verifies(endpoint.secret, request.body + b" ", signature)
    assert_id_and_timestamp_sent(request, event)


def test_shopify_style_verifies_as_shopifys_docs_write_it_and_is_never_recorded(celery_worker, receiver):
    # Given a receiver that echoes what it got, as a debugging endpoint would
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), **SIGNATURE_PRESETS["shopify"].fields())
    receiver.script("/hook", [echo])
    event = publish("order.paid", {"order": 2})

    [request] = receiver.wait_for(1)
    signature = header(request, "X-Shopify-Hmac-Sha256")
    assert shopify_verifies(endpoint.secret, request.body, signature)
    assert not shopify_verifies(endpoint.secret, request.body.replace(b'"order":2', b'"order":3'), signature)
    assert_id_and_timestamp_sent(request, event)
    # Its name does not say "signature", yet the attempt record keeps neither the header nor
    # the echoed value: with no signed timestamp, it would let anyone replay the body.
    attempt = wait_until(DeliveryAttempt.objects.first)
    assert attempt.request_headers["X-Shopify-Hmac-Sha256"] == "[redacted]"
    assert signature not in attempt.response_body and signature not in json.dumps(attempt.response_headers)


def echo(handler) -> None:
    """Answer 200 with the request's headers in the body and in a response header."""
    text = "\n".join(f"{k}: {v}" for k, v in handler.headers.items()).encode()
    handler.send_response(200)
    handler.send_header("X-Echo", handler.headers.get("X-Shopify-Hmac-Sha256", ""))
    handler.send_header("Content-Length", str(len(text)))
    handler.end_headers()
    handler.wfile.write(text)


def test_plain_hex_body_hmac_verifies_with_pythons_hmac(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), signature_scheme="body_hmac")
    event = publish("order.paid", {"order": 3})

    [request] = receiver.wait_for(1)
    assert plain_hex_verifies(endpoint.secret, request.body, header(request, "X-Webhook-Signature"))
    assert_id_and_timestamp_sent(request, event)


def test_stripe_style_verifies_with_stripe_for_either_secret_during_a_rotation(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), **SIGNATURE_PRESETS["stripe"].fields())
    old_secret = endpoint.secret
    new_secret = endpoint.rotate_secret()
    event = publish("order.paid", {"order": 4})

    [request] = receiver.wait_for(1)
    signature = header(request, "Stripe-Signature")
    assert signature.count("v1=") == 2
    for secret in (old_secret, new_secret):  # a receiver holding either one accepts
        verified = stripe.Webhook.construct_event(request.body.decode(), signature, secret)
        assert verified["data"]["order"] == 4
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(request.body.decode(), signature, "whsec_another")
    assert_id_and_timestamp_sent(request, event)
    assert not [name for name in request.headers if name.lower() == "x-webhook-signature"]


def test_standard_preset_verifies_with_standardwebhooks_for_either_secret_during_a_rotation(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), **SIGNATURE_PRESETS["standard"].fields())
    old_secret = endpoint.secret
    new_secret = endpoint.rotate_secret()
    publish("order.paid", {"order": 5})

    [request] = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    for secret in (old_secret, new_secret):
        assert standardwebhooks.Webhook(secret).verify(request.body, headers)["data"] == {"order": 5}


def test_body_hmac_signs_with_the_old_secret_until_it_expires_then_with_the_new_one(celery_worker, receiver):
    # Given a GitHub-style endpoint mid-rotation: the old secret has 24 h of grace left
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), **SIGNATURE_PRESETS["github"].fields())
    old_secret = endpoint.secret
    new_secret = endpoint.rotate_secret(grace=timedelta(hours=24))

    # When an event is sent during the grace period
    publish("order.paid", {"order": 6})

    # Then the old secret signs it alone: receivers that still hold it keep verifying
    [during] = receiver.wait_for(1)
    signature = header(during, "X-Hub-Signature-256")
    assert github_verifies(old_secret, during.body, signature)
    assert not github_verifies(new_secret, during.body, signature)

    # And once the old secret has expired, the new one signs
    endpoint.secrets.exclude(expires_at=None).update(expires_at=timezone.now() - timedelta(seconds=1))
    publish("order.paid", {"order": 7})
    after = receiver.wait_for(2)[1]
    assert github_verifies(new_secret, after.body, header(after, "X-Hub-Signature-256"))
    assert not github_verifies(old_secret, after.body, header(after, "X-Hub-Signature-256"))
