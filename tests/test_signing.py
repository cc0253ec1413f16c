"""Signing against the shared reference vectors, checked with other people's verifiers."""

import json
import time
from pathlib import Path

import pytest
import standardwebhooks
import stripe
import svix.webhooks

from deliveries.signing import sign_standard, sign_timestamped_hex, signature_headers
from endpoints.models import SignatureScheme, generate_secret

VECTORS = json.loads((Path(__file__).parent / "data" / "signature-vectors.json").read_text())
STANDARD = VECTORS["standard_webhooks"]["valid"][0]
HEX = VECTORS["timestamped_hex"]["valid"][0]


def test_standard_signature_matches_reference_vector():
    signature = sign_standard([STANDARD["secret"]], STANDARD["id"], STANDARD["timestamp"], STANDARD["body"].encode())
    assert signature == STANDARD["signature"]


def test_timestamped_hex_signature_matches_reference_vector():
    header = sign_timestamped_hex([HEX["secret"]], HEX["timestamp"], HEX["body"].encode())
    assert header == HEX["header"]


def test_one_standard_entry_per_secret_newest_first():
    other = generate_secret()
    signature = sign_standard([STANDARD["secret"], other], STANDARD["id"], STANDARD["timestamp"], b"{}")
    entries = signature.split(" ")
    assert len(entries) == 2
    assert entries[0] == sign_standard([STANDARD["secret"]], STANDARD["id"], STANDARD["timestamp"], b"{}")
    assert entries[1] == sign_standard([other], STANDARD["id"], STANDARD["timestamp"], b"{}")


def test_fresh_headers_verify_with_standardwebhooks_and_svix():
    secret = generate_secret()
    body = json.dumps({"type": "order.paid", "data": {"order": 1}}).encode()
    headers = signature_headers(SignatureScheme.STANDARD, [secret], "evt_1", int(time.time()), body)
    standardwebhooks.Webhook(secret).verify(body, headers)
    svix.webhooks.Webhook(secret).verify(body, headers)


def test_a_changed_body_fails_verification():
    secret = generate_secret()
    body = b'{"data":{"order":1}}'
    headers = signature_headers(SignatureScheme.STANDARD, [secret], "evt_1", int(time.time()), body)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(b'{"data":{"order":2}}', headers)


def test_fresh_timestamped_hex_header_verifies_with_stripe():
    secret = generate_secret()
    body = b'{"id":"evt_1","data":{"order":1}}'
    headers = signature_headers(SignatureScheme.TIMESTAMPED_HEX, [secret], "evt_1", int(time.time()), body)
    event = stripe.Webhook.construct_event(body.decode(), headers["X-Webhook-Signature"], secret)
    assert event["id"] == "evt_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.decode() + " ", headers["X-Webhook-Signature"], secret)
