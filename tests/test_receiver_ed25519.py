"""The receiver toolkit with a public key (`whpk_...`): it verifies Standard Webhooks `v1a`
(ed25519) entries, against Svix's signature, what our sender signs, malformed input, and our
real sender over real HTTP to a decorated Django view. `cryptography` is imported only then.

This module is also the receiving project's URLconf in the round trip (ROOT_URLCONF).
"""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.http import HttpRequest, HttpResponse
from django.urls import path

from deliveries import publish
from deliveries.models import DeliveryStatus
from deliveries.signing import signature_headers
from endpoints.models import Endpoint, EndpointSecret, SignatureScheme, generate_secret
from tests.conftest import wait_until
from tests.django_server import serving_django
from tests.test_signing_keys import SVIX_MESSAGE, SVIX_PUBLIC_KEY, SVIX_SIGNATURE
from webhook_receiver import (
    InvalidSignatureError,
    MissingHeaderError,
    TimestampOutsideToleranceError,
    VerifiedWebhook,
    verify,
    verify_webhook,
)
from webhook_receiver.django import webhook_view

REPO = Path(__file__).resolve().parent.parent
ED25519 = SignatureScheme.STANDARD_ED25519
BODY = json.dumps({"id": "evt_1", "type": "order.paid", "data": {"order": 1, "note": "café ☕"}}).encode()


def key_pair() -> tuple[str, str]:
    """A new (private, public) key pair as our sender makes them."""
    private_key = generate_secret(ED25519)
    return private_key, EndpointSecret(secret=private_key).public_key


PRIVATE, PUBLIC = key_pair()


def signed(keys: list[str], body: bytes = BODY, msg_id: str = "evt_1", timestamp: int | None = None) -> dict:
    """Headers exactly as our sender signs them."""
    return signature_headers(ED25519, keys, msg_id, int(time.time()) if timestamp is None else timestamp, body)


# --- verify with a public key --------------------------------------------------------------------


def test_svix_signature_verifies_with_its_public_key():
    msg_id, timestamp, body = SVIX_MESSAGE
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": SVIX_SIGNATURE}
    webhook = verify_webhook(SVIX_PUBLIC_KEY, headers, body, now=timestamp)
    assert webhook == VerifiedWebhook(msg_id, timestamp, {"test": 2432232314}, "standard_ed25519", 0)
    assert verify(SVIX_PUBLIC_KEY.rstrip("="), headers, body, now=timestamp) == {"test": 2432232314}  # padding optional


def test_what_our_sender_signs_verifies_in_any_header_case_and_a_changed_body_does_not():
    headers = signed([PRIVATE])
    for variant in (headers, {k.upper(): v for k, v in headers.items()}):
        assert verify_webhook(PUBLIC, variant, BODY).payload["data"] == {"order": 1, "note": "café ☕"}
    with pytest.raises(InvalidSignatureError, match="a wrong public key, or a body changed after signing"):
        verify(PUBLIC, headers, BODY.replace(b'"order": 1', b'"order": 2'))
    for changed in ({"webhook-id": "evt_2"}, {"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}):
        with pytest.raises(InvalidSignatureError):
            verify(PUBLIC, {**headers, **changed}, BODY)
    with pytest.raises(InvalidSignatureError, match="matches the public key"):
        verify(key_pair()[1], headers, BODY)


def test_rotation_either_public_key_verifies_and_the_first_that_matches_wins():
    new_private, new_public = key_pair()
    headers = signed([new_private, PRIVATE])
    assert verify_webhook(PUBLIC, headers, BODY).secret_index == 0
    assert verify_webhook([key_pair()[1], new_public], headers, BODY).secret_index == 1
    with pytest.raises(InvalidSignatureError, match="matches any of the 2 public keys"):
        verify([key_pair()[1], key_pair()[1]], headers, BODY)


def test_tolerance_applies_to_v1a_both_ways():
    headers = signed([PRIVATE], timestamp=1_800_000_000)
    verify(PUBLIC, headers, BODY, now=1_800_000_300)
    with pytest.raises(TimestampOutsideToleranceError, match="in the past"):
        verify(PUBLIC, headers, BODY, now=1_800_000_301)
    with pytest.raises(TimestampOutsideToleranceError, match="in the future"):
        verify(PUBLIC, headers, BODY, now=1_799_999_699)


def test_a_public_key_checks_only_v1a_entries_and_a_secret_only_v1():
    secret = generate_secret()
    mixed = signed([PRIVATE, secret])  # after a switch of scheme: v1a and v1 side by side
    assert verify(PUBLIC, mixed, BODY)["id"] == verify(secret, mixed, BODY)["id"] == "evt_1"
    with pytest.raises(InvalidSignatureError, match="no well-formed v1a"):
        verify(PUBLIC, signed([secret]), BODY)
    with pytest.raises(InvalidSignatureError, match="no v1 signature"):
        verify(secret, signed([PRIVATE]), BODY)


@pytest.mark.parametrize(
    ("signature", "message"),
    [("v1a,!!!!", "1 malformed"), ("v1a,YWJj", "1 malformed"), ("v1a", "1 malformed"), ("v2,YWJj", "no well-formed")],
)
def test_malformed_v1a_entries_are_rejected(signature, message):
    with pytest.raises(InvalidSignatureError, match=message):
        verify(PUBLIC, {**signed([PRIVATE]), "webhook-signature": signature}, BODY)


def test_missing_headers_and_misconfigured_keys():
    with pytest.raises(MissingHeaderError, match="missing webhook-id header"):
        verify(PUBLIC, {k: v for k, v in signed([PRIVATE]).items() if k != "webhook-id"}, BODY)
    for keys in ("whpk_abc", "whpk_" + "A" * 60, [PUBLIC, generate_secret()]):
        with pytest.raises(ValueError, match="whpk_"):
            verify(keys, signed([PRIVATE]), BODY)


def test_without_cryptography_a_public_key_says_what_to_install_and_secrets_still_verify():
    secret = generate_secret()
    script = f"""
import sys
sys.modules["cryptography"] = None  # as if it were not installed
from webhook_receiver import verify
headers = {signed([secret])!r}
body = {BODY!r}
assert verify({secret!r}, headers, body)["id"] == "evt_1"
try:
    verify({PUBLIC!r}, {signed([PRIVATE])!r}, body)
except ImportError as error:
    print(error)
"""
    run = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "needs the 'cryptography' package (pip install cryptography)" in run.stdout


# --- round trip: our sender, a real worker, real HTTP, a decorated Django view --------------------

CALLS: list[tuple[str, dict]] = []


@webhook_view(secret_setting="TEST_WEBHOOK_PUBLIC_KEY", dedupe_store=False)
def ed25519_hook(request: HttpRequest) -> HttpResponse:
    CALLS.append((request.webhook_id, request.webhook))
    return HttpResponse("ok")


urlpatterns = [path("hook/ed25519/", ed25519_hook)]


@pytest.fixture
def ed25519_receiver(settings) -> Iterator[str]:
    settings.ROOT_URLCONF = __name__
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    CALLS.clear()
    with serving_django() as url:
        yield url


@pytest.mark.django_db(transaction=True)
def test_round_trip_our_sender_to_a_django_view_verifying_with_the_public_key(
    celery_worker, ed25519_receiver, settings
):
    # Given a receiving view configured with the endpoint's public key only
    endpoint = Endpoint.objects.create(url=f"{ed25519_receiver}/hook/ed25519/", signature_scheme=ED25519)
    settings.TEST_WEBHOOK_PUBLIC_KEY = endpoint.public_key
    # and another ed25519 endpoint aimed at it, whose key the view does not know
    impostor = Endpoint.objects.create(url=f"{ed25519_receiver}/hook/ed25519/?impostor", signature_scheme=ED25519)

    # When an event is published
    event = publish("order.paid", {"order": 9})

    # Then the view ran once, for the verified webhook, and the other key was refused (401)
    wait_until(lambda: event.deliveries.exclude(status=DeliveryStatus.PENDING).count() == 2, timeout=20)
    assert [webhook_id for webhook_id, _ in CALLS] == [event.webhook_id]
    assert CALLS[0][1]["data"] == {"order": 9}
    assert event.deliveries.get(endpoint=endpoint).status == DeliveryStatus.SUCCEEDED
    refused = event.deliveries.get(endpoint=impostor)
    assert (refused.status, refused.last_status_code) == (DeliveryStatus.FAILED, 401)
