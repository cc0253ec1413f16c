"""Ed25519 key pairs together with the other signature formats: an ed25519 key left live by a
switch of scheme never signs an HMAC format (and is never used as an HMAC key), the admin's
presets switch key kinds only with the permission to rotate secrets, the endpoint page says
what each key does, and the receiver toolkit pairs public keys with `standard_ed25519` only."""

import base64
import hashlib
import hmac
import time

import pytest
from django.test import Client
from django.urls import reverse

from deliveries import publish
from deliveries.models import DeliveryStatus
from deliveries.signing import signature_headers
from endpoints.models import Endpoint, EndpointSecret, SignatureScheme, generate_secret
from endpoints.signature_formats import SIGNATURE_PRESETS
from tests.conftest import wait_until
from tests.operators import make_staff
from webhook_receiver import verify, verify_webhook

ED25519 = SignatureScheme.STANDARD_ED25519
BODY = b'{"id":"evt_1","type":"order.paid","data":{"order":1}}'


def github_verifies(secret: str, body: bytes, signature_header: str) -> bool:
    """GitHub's documented check: "sha256=" + the hex HMAC of the body, compared in constant time."""
    expected_signature = "sha256=" + hmac.new(secret.encode("utf-8"), msg=body, digestmod=hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected_signature, signature_header)


def shopify_verifies(secret: str, data: bytes, hmac_header: str) -> bool:
    """Shopify's documented check: the base64 HMAC of the body, compared in constant time."""
    computed_hmac = base64.b64encode(hmac.new(secret.encode("utf-8"), data, digestmod=hashlib.sha256).digest())
    return hmac.compare_digest(computed_hmac, hmac_header.encode("utf-8"))


# --- the sender ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_after_a_switch_from_ed25519_to_github_style_the_new_shared_secret_signs_over_http(celery_worker, receiver):
    # Given an ed25519 endpoint switched to the GitHub-style preset: its key pair stays live 24 h
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), signature_scheme=ED25519)
    [private_key] = endpoint.live_secrets()
    for field, value in SIGNATURE_PRESETS["github"].fields().items():
        setattr(endpoint, field, value)
    endpoint.save()
    secret = endpoint.secret
    assert secret.startswith("whsec_") and endpoint.live_secrets() == [secret, private_key]

    # When an event is delivered over real HTTP
    event = publish("order.paid", {"order": 1})
    [request] = receiver.wait_for(1)
    wait_until(lambda: event.deliveries.filter(status=DeliveryStatus.SUCCEEDED).exists())

    # Then GitHub's own check passes with the new secret: the oldest live *shared* secret signs,
    # never the older ed25519 private key (as an HMAC key)
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert github_verifies(secret, request.body, headers["x-hub-signature-256"])
    assert not github_verifies(private_key, request.body, headers["x-hub-signature-256"])
    assert "webhook-signature" not in headers


@pytest.mark.django_db
@pytest.mark.parametrize("preset", ["github", "shopify", "stripe"])
def test_no_hmac_format_signs_with_an_ed25519_key(preset):
    # Given the live keys of an endpoint switched from ed25519 (newest first): a new shared
    # secret and the key pair, which is older
    private_key, secret = generate_secret(ED25519), generate_secret()
    fields = SIGNATURE_PRESETS[preset].fields()
    headers = signature_headers(
        fields["signature_scheme"],
        [secret, private_key],
        "evt_1",
        int(time.time()),
        BODY,
        header=fields["signature_header"],
        encoding=fields["signature_encoding"],
        prefix=fields["signature_prefix"],
    )
    value = headers[fields["signature_header"]]
    if preset == "github":
        assert github_verifies(secret, BODY, value)
    elif preset == "shopify":
        assert shopify_verifies(secret, BODY, value)
    else:
        assert value.count("v1=") == 1
        assert verify(secret, headers, BODY, preset="stripe")["id"] == "evt_1"
    assert "v1a" not in value


# --- admin -----------------------------------------------------------------------------------------


def _client(username: str, permissions: tuple[str, ...] | None = None) -> Client:
    client = Client()
    client.force_login(make_staff(username, permissions) if permissions else make_staff(username))
    return client


def _change_form(endpoint: Endpoint, **changes: str) -> dict[str, str]:
    form = {
        "url": endpoint.url,
        "tenant": endpoint.tenant,
        "description": "",
        "event_types": "[]",
        "headers": "{}",
        "sensitive_headers": "[]",
        "signature_preset": "",
        "signature_scheme": endpoint.signature_scheme,
        "signature_header": endpoint.signature_header,
        "signature_encoding": endpoint.signature_encoding,
        "signature_prefix": endpoint.signature_prefix,
    }
    return {**form, **changes}


@pytest.mark.django_db
def test_a_preset_that_switches_key_kind_needs_the_rotate_permission_too():
    endpoint = Endpoint.objects.create(url="https://example.com/hook", signature_scheme=ED25519)
    url = reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])

    # A user who may change endpoints but not rotate secrets picks a preset: refused, nothing changes
    editor = _client("editor", ("endpoints.view_endpoint", "endpoints.change_endpoint"))
    for preset in ("github", "standard"):
        page = editor.post(url, _change_form(endpoint, signature_preset=preset)).content.decode()
        assert "needs the permission to rotate signing secrets" in page
        assert Endpoint.objects.get(pk=endpoint.pk).signature_scheme == ED25519 and endpoint.secrets.count() == 1

    # An operator's preset switches, and lands on the page showing the new shared secret once
    response = _client("operator").post(url, _change_form(endpoint, signature_preset="github"), follow=True)
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    page = response.content.decode()
    assert (endpoint.signature_scheme, endpoint.signature_header) == ("body_hmac", "X-Hub-Signature-256")
    assert endpoint.secret.startswith("whsec_") and endpoint.secret in page
    assert "whsk_" not in page and endpoint.secrets.count() == 2


@pytest.mark.django_db
def test_the_endpoint_page_says_what_each_key_does_in_its_format():
    client = _client("operator")

    # An ed25519 endpoint: its header form, and that receivers verify with the public key
    endpoint = Endpoint.objects.create(url="https://example.com/hook", signature_scheme=ED25519)
    page = client.get(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])).content.decode()
    assert "webhook-signature: v1a,&lt;base64 ed25519 signature of id.timestamp.body&gt;</code>" in page
    assert "receivers verify with its public key" in page

    # Switched to GitHub-style: the new shared secret signs, the key pair signs nothing
    for field, value in SIGNATURE_PRESETS["github"].fields().items():
        setattr(endpoint, field, value)
    endpoint.save()
    page = client.get(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])).content.decode()
    newest, older = endpoint.secrets.live()
    assert newest.public_key == "" and older.public_key
    assert f"{older.public_key}</code>" in page
    assert page.count("signs nothing in this format (an ed25519 key)") == 1
    assert "waits" not in page  # the shared secret is the only one that can sign, so it signs now


# --- the receiver toolkit ----------------------------------------------------------------------------


def test_public_keys_go_with_standard_ed25519_only():
    private_key = generate_secret(ED25519)
    public_key = EndpointSecret(secret=private_key).public_key
    secret = generate_secret()
    headers = signature_headers(ED25519, [private_key], "evt_1", int(time.time()), BODY)

    # Named or not, a public key verifies v1a
    assert verify_webhook(public_key, headers, BODY, scheme="standard_ed25519").scheme == "standard_ed25519"
    assert verify_webhook(public_key, headers, BODY).scheme == "standard_ed25519"
    # and any other format with a public key, or standard_ed25519 with a secret, is a programming error
    with pytest.raises(ValueError, match="verify only standard_ed25519"):
        verify(public_key, headers, BODY, preset="github")
    with pytest.raises(ValueError, match="verify only standard_ed25519"):
        verify(public_key, headers, BODY, scheme="standard")
    with pytest.raises(ValueError, match="verifies with the endpoint's public key"):
        verify(secret, headers, BODY, scheme="standard_ed25519")
    with pytest.raises(ValueError, match="not both"):
        verify([public_key, secret], headers, BODY, scheme="standard_ed25519")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scheme", ["body_hmac", "timestamped_hex", "no_such_scheme"])
def test_an_endpoint_that_cannot_sign_sends_nothing_and_its_delivery_fails_visibly(celery_worker, receiver, scheme):
    # Given an endpoint whose only live key cannot sign in its format, written past validation
    # (an ed25519 key under an HMAC format), or a scheme no signer knows
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), signature_scheme=ED25519)
    Endpoint.objects.filter(pk=endpoint.pk).update(signature_scheme=scheme)

    # When an event is published
    event = publish("order.paid", {"order": 3})

    # Then no request goes out unsigned (or at all), and the delivery is failed, not stuck leased:
    # one attempt saying why, for an operator to retry once the endpoint is fixed
    delivery = wait_until(lambda: event.deliveries.filter(status=DeliveryStatus.FAILED).first(), timeout=20)
    [attempt] = delivery.attempts.all()
    assert attempt.error_class == "SigningError"
    assert scheme in attempt.error_message
    assert receiver.received("/hook") == []
