"""Signature formats per endpoint: what an operator may set (and what is refused, writing
nothing), how each format is signed, and the presets and warning in admin.

The deliveries over real HTTP, checked the way each provider's receivers check them, are in
tests/test_signature_deliveries.py; the receiver toolkit's side in tests/test_receiver_formats.py.
"""

import base64
import hashlib
import hmac
import json

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

import webhook_receiver
from deliveries.signing import SIGNERS, UnknownSignatureScheme, signature_headers
from endpoints.models import Endpoint, EndpointSecret, SignatureScheme
from endpoints.signature_formats import SCHEME_TRAITS, SIGNATURE_PRESETS
from tests.operators import make_staff

URL = "https://receiver.example.com/hook"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwRnBxdWdSbzQ="
BODY = b'{"id":"evt_1","type":"order.paid","data":{"order":1}}'


# --- what an endpoint may be given --------------------------------------------------------------


@pytest.mark.django_db
def test_the_contract_creates_github_and_stripe_style_endpoints():
    github = Endpoint.objects.create(
        url=URL,
        signature_scheme="body_hmac",
        signature_header="X-Hub-Signature-256",
        signature_encoding="hex",
        signature_prefix="sha256=",
    )
    stripe_style = Endpoint.objects.create(
        url=URL, signature_scheme="timestamped_hex", signature_header="Stripe-Signature"
    )
    github.refresh_from_db()
    stripe_style.refresh_from_db()
    assert (github.signature_scheme, github.signature_header, github.signature_encoding, github.signature_prefix) == (
        "body_hmac",
        "X-Hub-Signature-256",
        "hex",
        "sha256=",
    )
    assert (stripe_style.signature_scheme, stripe_style.signature_header) == ("timestamped_hex", "Stripe-Signature")


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["X-Webhook-Signature", "x-webhook-signature", ""])
def test_the_default_signature_header_may_be_named_or_left_blank(header):
    endpoint = Endpoint.objects.create(url=URL, signature_scheme="body_hmac", signature_header=header)
    assert endpoint.signature_header == header


BAD_SIGNATURE_SETTINGS = [
    # an unknown encoding or scheme
    ({"signature_scheme": "body_hmac", "signature_encoding": "b64"}, "signature_encoding", "use hex or base64"),
    ({"signature_scheme": "body_hmac", "signature_encoding": "HEX"}, "signature_encoding", "use hex or base64"),
    ({"signature_scheme": "hmac"}, "signature_scheme", "standard, timestamped_hex, body_hmac"),
    # a header name that is not an HTTP token
    ({"signature_scheme": "body_hmac", "signature_header": "X Hub Signature"}, "signature_header", "not a valid HTTP"),
    ({"signature_scheme": "body_hmac", "signature_header": "X-Sig:"}, "signature_header", "not a valid HTTP"),
    ({"signature_scheme": "body_hmac", "signature_header": "X-Sig\r\nX-Evil"}, "signature_header", "not a valid"),
    ({"signature_scheme": "body_hmac", "signature_header": "X-Signatür"}, "signature_header", "not a valid HTTP"),
    ({"signature_scheme": "timestamped_hex", "signature_header": "X-" + "S" * 99}, "signature_header", "longer than"),
    # a header name that collides with ours
    ({"signature_scheme": "body_hmac", "signature_header": "webhook-id"}, "signature_header", "sets itself"),
    ({"signature_scheme": "body_hmac", "signature_header": "Webhook-Timestamp"}, "signature_header", "sets itself"),
    ({"signature_scheme": "body_hmac", "signature_header": "webhook-signature"}, "signature_header", "sets itself"),
    ({"signature_scheme": "body_hmac", "signature_header": "X-Webhook-Id"}, "signature_header", "sets itself"),
    ({"signature_scheme": "timestamped_hex", "signature_header": "x-webhook-timestamp"}, "signature_header", "itself"),
    # ... or with the request's own headers
    ({"signature_scheme": "body_hmac", "signature_header": "Content-Type"}, "signature_header", "sets itself"),
    ({"signature_scheme": "body_hmac", "signature_header": "host"}, "signature_header", "sets itself"),
    ({"signature_scheme": "timestamped_hex", "signature_header": "Content-Length"}, "signature_header", "sets itself"),
    ({"signature_scheme": "body_hmac", "signature_header": "User-Agent"}, "signature_header", "sets itself"),
    # ... or with one of the endpoint's custom headers, in any case
    (
        {"signature_scheme": "body_hmac", "signature_header": "x-partner-hmac", "headers": {"X-Partner-Hmac": "p"}},
        "signature_header",
        "also one of this endpoint's custom headers",
    ),
    # a prefix that would split the request or be trimmed away
    ({"signature_scheme": "body_hmac", "signature_prefix": "sha256=\r\nX-Evil: 1"}, "signature_prefix", "CR, LF"),
    ({"signature_scheme": "body_hmac", "signature_prefix": "\n"}, "signature_prefix", "line breaks"),
    ({"signature_scheme": "body_hmac", "signature_prefix": "sha256=\x00"}, "signature_prefix", "control characters"),
    ({"signature_scheme": "body_hmac", "signature_prefix": "sha256=é"}, "signature_prefix", "plain ASCII"),
    ({"signature_scheme": "body_hmac", "signature_prefix": "sha 256="}, "signature_prefix", "spaces"),
    ({"signature_scheme": "body_hmac", "signature_prefix": "p" * 33}, "signature_prefix", "longer than 32"),
    # settings the chosen scheme does not use are refused, not ignored
    ({"signature_encoding": "base64"}, "signature_encoding", "applies only to the body_hmac signature scheme"),
    ({"signature_prefix": "sha256="}, "signature_prefix", "applies only to the body_hmac"),
    ({"signature_header": "X-Hub-Signature-256"}, "signature_header", "timestamped_hex and body_hmac"),
    ({"signature_scheme": "timestamped_hex", "signature_encoding": "hex"}, "signature_encoding", "not to timestamped"),
    ({"signature_scheme": "timestamped_hex", "signature_prefix": "t="}, "signature_prefix", "not to timestamped_hex"),
    ({"signature_scheme": "body_hmac", "signature_header": None}, "signature_header", "cannot be null"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("fields", "field", "message"), BAD_SIGNATURE_SETTINGS, ids=range(len(BAD_SIGNATURE_SETTINGS)))
def test_bad_signature_settings_are_refused_and_nothing_is_written(fields, field, message):
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url=URL, **fields)
    errors = raised.value.message_dict
    assert field in errors, errors
    assert any(message in text for text in errors[field]), errors
    assert not Endpoint.objects.exists() and not EndpointSecret.objects.exists()


@pytest.mark.django_db
def test_a_bad_change_to_a_saved_endpoint_writes_nothing():
    endpoint = Endpoint.objects.create(url=URL, **SIGNATURE_PRESETS["github"].fields())
    endpoint.signature_prefix = "sha256=\r\n"
    endpoint.signature_encoding = "base32"
    with pytest.raises(ValidationError) as raised:
        endpoint.save()
    assert set(raised.value.message_dict) == {"signature_prefix", "signature_encoding"}
    stored = Endpoint.objects.get(pk=endpoint.pk)
    assert (stored.signature_prefix, stored.signature_encoding) == ("sha256=", "hex")


@pytest.mark.django_db
@pytest.mark.parametrize("preset", list(SIGNATURE_PRESETS))
def test_every_preset_is_a_valid_endpoint(preset):
    endpoint = Endpoint.objects.create(url=URL, **SIGNATURE_PRESETS[preset].fields())
    assert endpoint.signature_scheme == SIGNATURE_PRESETS[preset].scheme


# --- how each format is signed -------------------------------------------------------------------


def test_every_scheme_has_one_signer_and_its_traits():
    assert set(SIGNERS) == set(SignatureScheme.values) == set(SCHEME_TRAITS)


def test_an_unknown_scheme_is_an_error_not_another_format():
    with pytest.raises(UnknownSignatureScheme, match="unknown signature scheme 'hmac_sha1'"):
        signature_headers("hmac_sha1", [SECRET], "evt_1", 1_800_000_000, BODY)
    with pytest.raises(UnknownSignatureScheme, match="unknown signature encoding 'base32'"):
        signature_headers("body_hmac", [SECRET], "evt_1", 1_800_000_000, BODY, encoding="base32")


@pytest.mark.parametrize(
    ("options", "header", "value"),
    [
        ({}, "X-Webhook-Signature", hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()),
        (
            {"header": "X-Hub-Signature-256", "encoding": "hex", "prefix": "sha256="},
            "X-Hub-Signature-256",
            "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest(),
        ),
        (
            {"header": "X-Shopify-Hmac-Sha256", "encoding": "base64"},
            "X-Shopify-Hmac-Sha256",
            base64.b64encode(hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()).decode(),
        ),
    ],
    ids=["plain", "github", "shopify"],
)
def test_body_hmac_signs_the_body_alone_and_still_sends_the_id_and_timestamp(options, header, value):
    headers = signature_headers("body_hmac", [SECRET], "evt_1", 1_800_000_000, BODY, **options)
    assert headers == {"X-Webhook-Id": "evt_1", "X-Webhook-Timestamp": "1800000000", header: value}


def test_body_hmac_signs_with_the_oldest_live_secret_only():
    newer = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    headers = signature_headers("body_hmac", [newer, SECRET], "evt_1", 1_800_000_000, BODY)  # newest first
    assert headers["X-Webhook-Signature"] == hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()


def test_timestamped_hex_carries_one_v1_per_secret_under_the_header_chosen():
    newer = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    headers = signature_headers(
        "timestamped_hex", [newer, SECRET], "evt_1", 1_800_000_000, BODY, header="Stripe-Signature"
    )
    assert set(headers) == {"X-Webhook-Id", "X-Webhook-Timestamp", "Stripe-Signature"}
    signed = b"1800000000." + BODY
    assert headers["Stripe-Signature"] == ",".join(
        ["t=1800000000", *(f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in (newer, SECRET))]
    )


def test_the_senders_presets_are_the_receiver_toolkits_presets():
    def as_sent(scheme: str, header: str, encoding: str, prefix: str) -> tuple:
        """What a preset means on the wire (the sender stores defaults as blanks)."""
        if scheme == "standard":
            return ("standard",)
        if scheme == "timestamped_hex":
            return (scheme, (header or "X-Webhook-Signature").lower())
        return (scheme, (header or "X-Webhook-Signature").lower(), encoding or "hex", prefix)

    sender = {name: as_sent(p.scheme, p.header, p.encoding, p.prefix) for name, p in SIGNATURE_PRESETS.items()}
    toolkit = {name: as_sent(f.scheme, f.header, f.encoding, f.prefix) for name, f in webhook_receiver.PRESETS.items()}
    assert sender == toolkit


# --- admin: presets, and the warning for a format without a signed timestamp ----------------------


@pytest.fixture
def operator_client(db) -> Client:
    client = Client()
    client.force_login(make_staff("operator"))
    return client


def endpoint_form(**changes: str) -> dict[str, str]:
    """The admin endpoint form as posted: a new endpoint with the default format, and `changes`."""
    form = {
        "url": URL,
        "tenant": "acme",
        "description": "",
        "event_types": "[]",
        "headers": "{}",
        "sensitive_headers": "[]",
        "signature_preset": "",
        "signature_scheme": "standard",
        "signature_header": "",
        "signature_encoding": "",
        "signature_prefix": "",
    }
    return {**form, **changes}


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.mark.django_db
def test_adding_an_endpoint_with_the_github_preset_sets_its_format_and_warns_about_replays(operator_client):
    # When an operator picks the GitHub-style preset (what the fields below say does not matter)
    response = operator_client.post(
        reverse("admin:endpoints_endpoint_add"),
        endpoint_form(signature_preset="github", signature_header="X-Ignored", signature_prefix="ignored="),
        follow=True,
    )

    # Then the endpoint signs GitHub-style, and the page says it has no replay protection
    endpoint = Endpoint.objects.get()
    assert (endpoint.signature_scheme, endpoint.signature_header, endpoint.signature_encoding) == (
        "body_hmac",
        "X-Hub-Signature-256",
        "hex",
    )
    assert endpoint.signature_prefix == "sha256="
    [warning] = [m for m in messages_of(response) if "no replay protection" in m]
    assert warning.startswith(f"Endpoint {endpoint.pk}: This signature format signs no timestamp")
    assert endpoint.secret in response.content.decode()  # the new secrets page, as before


@pytest.mark.django_db
def test_the_change_page_shows_the_format_and_the_warning_only_without_a_signed_timestamp(operator_client):
    shopify = Endpoint.objects.create(url=URL, **SIGNATURE_PRESETS["shopify"].fields())
    stripe_style = Endpoint.objects.create(url=URL, **SIGNATURE_PRESETS["stripe"].fields())

    page = operator_client.get(reverse("admin:endpoints_endpoint_change", args=[shopify.pk])).content.decode()
    assert "X-Shopify-Hmac-Sha256: &lt;base64 HMAC-SHA256 of the body&gt;</code> (Shopify-style)" in page
    assert 'id="no-replay-protection"' in page
    assert "oldest live secret signs alone until it expires" in page
    assert 'name="signature_preset"' in page

    page = operator_client.get(reverse("admin:endpoints_endpoint_change", args=[stripe_style.pk])).content.decode()
    assert (
        "Stripe-Signature: t=&lt;timestamp&gt;,v1=&lt;hex HMAC-SHA256 of timestamp.body&gt;</code> (Stripe-style)"
        in page
    )
    assert 'id="no-replay-protection"' not in page


@pytest.mark.django_db
def test_a_preset_replaces_every_signature_field_of_a_saved_endpoint(operator_client):
    endpoint = Endpoint.objects.create(url=URL, tenant="acme", **SIGNATURE_PRESETS["github"].fields())
    response = operator_client.post(
        reverse("admin:endpoints_endpoint_change", args=[endpoint.pk]),
        endpoint_form(signature_preset="stripe", signature_scheme="body_hmac", signature_encoding="hex"),
        follow=True,
    )
    assert response.status_code == 200
    endpoint.refresh_from_db()
    assert (endpoint.signature_scheme, endpoint.signature_header) == ("timestamped_hex", "Stripe-Signature")
    assert (endpoint.signature_encoding, endpoint.signature_prefix) == ("", "")
    assert not [m for m in messages_of(response) if "no replay protection" in m]


@pytest.mark.django_db
def test_bad_signature_fields_in_admin_are_shown_and_nothing_is_saved(operator_client):
    response = operator_client.post(
        reverse("admin:endpoints_endpoint_add"),
        endpoint_form(signature_scheme="body_hmac", signature_header="Content-Type", signature_prefix="a\r\nb"),
    )
    assert response.status_code == 200  # the form again, with its errors
    errors = response.context["adminform"].form.errors
    assert "sets itself" in errors["signature_header"][0]
    assert "CR, LF" in errors["signature_prefix"][0]
    assert not Endpoint.objects.exists()


@pytest.mark.django_db
def test_during_a_rotation_a_one_signature_format_shows_which_secret_signs(operator_client):
    endpoint = Endpoint.objects.create(url=URL, **SIGNATURE_PRESETS["github"].fields())
    endpoint.rotate_secret()
    page = operator_client.get(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])).content.decode()
    assert page.count(": signs until ") == 1  # the old secret, alone, until its expiry
    assert ": waits, signs from " in page

    standard = Endpoint.objects.create(url=URL)
    standard.rotate_secret()
    page = operator_client.get(reverse("admin:endpoints_endpoint_change", args=[standard.pk])).content.decode()
    assert "waits" not in page and page.count(": signs") == 2


def test_presets_are_named_for_the_receivers_that_know_them():
    assert {name: p.label.split(" (")[0] for name, p in SIGNATURE_PRESETS.items()} == {
        "standard": "Standard Webhooks",
        "github": "GitHub-style",
        "shopify": "Shopify-style",
        "stripe": "Stripe-style",
    }
    assert json.dumps(SIGNATURE_PRESETS["shopify"].fields()) == json.dumps(
        {
            "signature_scheme": "body_hmac",
            "signature_header": "X-Shopify-Hmac-Sha256",
            "signature_encoding": "base64",
            "signature_prefix": "",
        }
    )
