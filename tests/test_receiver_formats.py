"""The receiver toolkit verifies every format our sender signs in: by preset name or by scheme,
header, encoding and prefix; in `verify`, in the Django decorator, and over real HTTP from our
sender through a real worker."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest
from django.test import Client

from deliveries import publish
from deliveries.models import DeliveryStatus
from deliveries.signing import signature_headers
from endpoints.models import Endpoint, generate_secret
from endpoints.signature_formats import SIGNATURE_PRESETS
from tests import receiver_urls
from tests.conftest import wait_until
from tests.django_server import serving_django
from tests.receiver_urls import OLD_SECRET, SECRET
from webhook_receiver import (
    InvalidSignatureError,
    MissingHeaderError,
    VerifiedWebhook,
    signature_format,
    verify,
    verify_webhook,
)
from webhook_receiver.django import webhook_view

BODY = json.dumps({"id": "evt_1", "type": "order.paid", "data": {"order": 1, "note": "café ☕"}}).encode()
PAYLOAD = json.loads(BODY)


def sent(preset: str, body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), msg_id: str = "evt_1") -> dict:
    """The headers our sender sends for an endpoint set to `preset` ("plain": body_hmac, defaults)."""
    fields = {"signature_scheme": "body_hmac"} if preset == "plain" else SIGNATURE_PRESETS[preset].fields()
    return signature_headers(
        fields["signature_scheme"],
        list(secrets),
        msg_id,
        int(time.time()),  # at call time: a module-level constant could be stale in a long run
        body,
        header=fields.get("signature_header", ""),
        encoding=fields.get("signature_encoding", ""),
        prefix=fields.get("signature_prefix", ""),
    )


# (sender's format, the receiver's arguments naming it, the scheme verify reports)
FORMATS = [
    ("github", {"preset": "github"}, "body_hmac"),
    ("github", {"scheme": "body_hmac", "header": "X-Hub-Signature-256", "encoding": "hex", "prefix": "sha256="}, None),
    ("shopify", {"preset": "shopify"}, "body_hmac"),
    ("shopify", {"scheme": "body_hmac", "header": "X-Shopify-Hmac-Sha256", "encoding": "base64"}, None),
    ("stripe", {"preset": "stripe"}, "timestamped_hex"),
    ("stripe", {"scheme": "timestamped_hex", "header": "Stripe-Signature"}, None),
    ("plain", {"scheme": "body_hmac"}, "body_hmac"),
    ("plain", {"scheme": "body_hmac", "header": "x-webhook-signature", "encoding": "hex", "prefix": ""}, None),
    ("standard", {"preset": "standard"}, "standard"),
    ("standard", {}, "standard"),
]


@pytest.mark.parametrize(("preset", "options", "scheme"), FORMATS, ids=[f"{f[0]}-{'-'.join(f[1])}" for f in FORMATS])
def test_each_format_our_sender_signs_verifies_by_preset_or_by_parameters(preset, options, scheme):
    headers = sent(preset)
    webhook = verify_webhook(SECRET, headers, BODY, **options)
    assert (webhook.id, webhook.payload, webhook.secret_index) == ("evt_1", PAYLOAD, 0)
    assert webhook.scheme == (scheme or webhook.scheme)
    # body_hmac signs no timestamp: none is reported
    if webhook.scheme == "body_hmac":
        assert webhook.timestamp is None
    else:
        assert abs(webhook.timestamp - time.time()) < 60
    # header names in any case
    assert verify(SECRET, {k.upper(): v for k, v in headers.items()}, BODY, **options) == PAYLOAD
    with pytest.raises(InvalidSignatureError):
        verify(SECRET, headers, BODY.replace(b'"order": 1', b'"order": 2'), **options)
    with pytest.raises(InvalidSignatureError):
        verify(generate_secret(), headers, BODY, **options)


def test_accepts_what_github_and_shopify_style_senders_compute():
    # As their documentation computes it, with only their own header (no X-Webhook-Id): the id
    # then comes from the signed body.
    github = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    shopify = base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode()
    assert verify_webhook(SECRET, {"X-Hub-Signature-256": github}, BODY, preset="github").id == "evt_1"
    assert verify_webhook(SECRET, {"X-Shopify-Hmac-Sha256": shopify}, BODY, preset="shopify").id == "evt_1"
    # GitHub writes lowercase hex; an uppercase one is the same digest
    assert verify(SECRET, {"X-Hub-Signature-256": github.upper().replace("SHA256=", "sha256=")}, BODY, preset="github")


def test_body_hmac_checks_no_timestamp_so_an_old_request_still_verifies():
    headers = {**sent("github"), "X-Webhook-Timestamp": str(int(time.time()) - 30 * 24 * 3600)}
    webhook = verify_webhook(SECRET, headers, BODY, tolerance=0, preset="github")
    assert webhook.timestamp is None  # nothing signed says when: no replay protection


def test_body_hmac_is_never_detected_without_being_asked_for():
    with pytest.raises(InvalidSignatureError, match="scheme='body_hmac'"):
        verify(SECRET, sent("plain"), BODY)
    with pytest.raises(MissingHeaderError, match="pass scheme="):
        verify(SECRET, sent("github"), BODY)
    with pytest.raises(MissingHeaderError, match="pass scheme="):
        verify(SECRET, {"Stripe-Signature": sent("stripe")["Stripe-Signature"]}, BODY)


def test_a_named_format_reads_only_its_own_headers():
    # A Standard Webhooks request at a receiver expecting GitHub-style is missing its header.
    with pytest.raises(MissingHeaderError, match="missing X-Hub-Signature-256 header"):
        verify(SECRET, sent("standard"), BODY, preset="github")
    with pytest.raises(MissingHeaderError, match="missing webhook-id header"):
        verify(SECRET, sent("stripe"), BODY, scheme="standard")


@pytest.mark.parametrize(
    ("preset", "changed", "message"),
    [
        ("github", {"X-Hub-Signature-256": "sha1=" + "0" * 64}, "does not start with 'sha256='"),
        ("github", {"X-Hub-Signature-256": "sha256=" + "0" * 63}, "is not a hex HMAC-SHA256"),
        ("github", {"X-Hub-Signature-256": "sha256=" + "g" * 64}, "is not a hex HMAC-SHA256"),
        ("shopify", {"X-Shopify-Hmac-Sha256": "0" * 64}, "is not a base64 HMAC-SHA256"),  # hex where base64 goes
        ("shopify", {"X-Shopify-Hmac-Sha256": "YWJj"}, "is not a base64 HMAC-SHA256"),
        ("github", {"X-Hub-Signature-256": "sha256=" + "0" * 9000}, "longer than 8192"),
        ("github", {"X-Hub-Signature-256": "sha256=é"}, "control or non-ASCII"),
        ("github", {"X-Webhook-Id": "evt_2"}, "X-Webhook-Id does not match the id in the signed body"),
        ("shopify", {"X-Shopify-Hmac-Sha256": "A" * 43 + "="}, "does not match the secret"),
    ],
    ids=range(9),
)
def test_malformed_or_wrong_body_hmac_signatures_are_clear_rejections(preset, changed, message):
    with pytest.raises(InvalidSignatureError, match=message) as raised:
        verify(SECRET, {**sent(preset), **changed}, BODY, preset=preset)
    assert len(str(raised.value)) < 300


def test_a_missing_body_hmac_header_is_named():
    headers = {k: v for k, v in sent("shopify").items() if k != "X-Shopify-Hmac-Sha256"}
    with pytest.raises(MissingHeaderError, match="missing X-Shopify-Hmac-Sha256 header"):
        verify(SECRET, headers, BODY, preset="shopify")


def test_rotation_on_the_receiving_side_for_body_hmac():
    # One signature per request: a receiver switching secrets passes both; the first match wins.
    new = generate_secret()
    assert verify_webhook([new, SECRET], sent("github"), BODY, preset="github").secret_index == 1
    assert verify_webhook([new, SECRET], sent("github", secrets=(new,)), BODY, preset="github").secret_index == 0
    with pytest.raises(InvalidSignatureError, match="does not match any of the 2 secrets"):
        verify([new, generate_secret()], sent("github"), BODY, preset="github")


def test_rotation_in_stripe_style_each_secret_verifies_alone():
    new = generate_secret()
    headers = sent("stripe", secrets=(new, OLD_SECRET))
    assert verify_webhook(new, headers, BODY, preset="stripe").secret_index == 0
    assert verify_webhook(OLD_SECRET, headers, BODY, preset="stripe").secret_index == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preset": "gitlab"}, "unknown preset 'gitlab'; known: standard, github, shopify, stripe"),
        ({"scheme": "hmac"}, "unknown scheme 'hmac'; known: standard, timestamped_hex, body_hmac"),
        ({"preset": "github", "prefix": "sha1="}, "give preset= alone"),
        ({"header": "X-Hub-Signature-256"}, "need scheme="),
        ({"scheme": "standard", "header": "X-Sig"}, "header= does not apply to the standard scheme"),
        ({"scheme": "timestamped_hex", "encoding": "base64"}, "encoding= does not apply to the timestamped_hex"),
        ({"scheme": "body_hmac", "encoding": "base32"}, "encoding= must be one of hex, base64"),
        ({"scheme": "body_hmac", "header": "X Sig"}, "header= must be an HTTP header name"),
        ({"scheme": "body_hmac", "header": "X-Webhook-Id"}, "other than the id and timestamp headers"),
        ({"scheme": "body_hmac", "prefix": "sha256=\r\n"}, "prefix= must be up to 32 visible ASCII"),
    ],
    ids=range(10),
)
def test_a_format_that_does_not_exist_is_a_programming_error(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        verify(SECRET, sent("github"), BODY, **options)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        webhook_view(secret=SECRET, **options)


def test_signature_format_resolves_presets_and_parameters_alike():
    assert signature_format(preset="github") == signature_format(
        "body_hmac", header="X-Hub-Signature-256", encoding="hex", prefix="sha256="
    )
    assert signature_format() is None  # told from the headers


# --- the Django decorator, and our sender over real HTTP -----------------------------------------


@pytest.fixture
def receiving_project(settings) -> Iterator[None]:
    """This process as the receiving Django project of tests/receiver_urls.py, fresh cache."""
    settings.ROOT_URLCONF = "tests.receiver_urls"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": f"rf-{time.time_ns()}"}
    }
    settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
    receiver_urls.reset()
    yield
    receiver_urls.reset()


VIEWS = ["github", "shopify", "stripe", "plain", "standard"]


@pytest.mark.parametrize("name", VIEWS)
def test_a_view_decorated_for_a_format_accepts_it_and_deduplicates_it(receiving_project, name):
    client = Client(enforce_csrf_checks=True)
    headers = sent(name, msg_id="evt_1")
    post = lambda: client.post(f"/hook/{name}/", BODY, content_type="application/json", headers=headers)  # noqa: E731
    assert (post().content, post().content) == (b"ok", b"duplicate")
    assert receiver_urls.CALLS == [(name, "evt_1", PAYLOAD)]
    other = "standard" if name != "standard" else "github"
    response = client.post(f"/hook/{name}/", BODY, content_type="application/json", headers=sent(other))
    assert response.status_code in (400, 401)  # another format is not accepted


@pytest.mark.django_db(transaction=True)
def test_round_trip_our_sender_to_views_decorated_for_each_format(celery_worker, receiving_project):
    with serving_django() as base:
        # Given one endpoint per format, each sending to the view decorated for it
        for name in VIEWS:
            fields = {"signature_scheme": "body_hmac"} if name == "plain" else SIGNATURE_PRESETS[name].fields()
            Endpoint.objects.create(url=f"{base}/hook/{name}/", secret=SECRET, **fields)
        # and one whose format the view was not told about
        Endpoint.objects.create(url=f"{base}/hook/github/", secret=SECRET, **SIGNATURE_PRESETS["shopify"].fields())

        # When an event is published
        event = publish("order.paid", {"order": 9, "note": "café ☕"})

        # Then every view verified its format and saw the event once; the stranger was refused
        def finished() -> list | None:
            deliveries = list(event.deliveries.select_related("endpoint"))
            done = len(deliveries) == len(VIEWS) + 1 and all(d.status != DeliveryStatus.PENDING for d in deliveries)
            return deliveries if done else None

        deliveries = wait_until(finished, timeout=30)
    by_format = {(d.endpoint.signature_header, d.endpoint.url): d for d in deliveries}
    refused = by_format.pop(("X-Shopify-Hmac-Sha256", f"{base}/hook/github/"))
    assert (refused.status, refused.last_status_code) == (DeliveryStatus.FAILED, 400)
    assert all(d.status == DeliveryStatus.SUCCEEDED for d in by_format.values())
    assert sorted(name for name, _, _ in receiver_urls.CALLS) == sorted(VIEWS)
    for _, webhook_id, payload in receiver_urls.CALLS:
        assert (webhook_id, payload["id"], payload["data"]) == (event.webhook_id, event.webhook_id, event.payload)


def test_verified_webhook_reports_the_scheme():
    webhook = verify_webhook(SECRET, sent("shopify"), BODY, preset="shopify")
    assert webhook == VerifiedWebhook(id="evt_1", timestamp=None, payload=PAYLOAD, scheme="body_hmac", secret_index=0)
