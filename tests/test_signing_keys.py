"""Ed25519 key pairs (Standard Webhooks `v1a`): endpoints that sign with a private key only the
sender holds, checked on real deliveries with `cryptography` alone, from the public key the
receiver is given (`standardwebhooks` silently ignores v1a entries, so it cannot check them)."""

import base64
from datetime import timedelta
from io import StringIO

import pytest
import standardwebhooks
import stripe
from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deliveries import publish
from deliveries.models import DeliveryStatus
from deliveries.signing import sign_standard, signature_headers
from endpoints.models import Endpoint, EndpointSecret, SignatureScheme, generate_secret
from tests.conftest import wait_until
from tests.operators import VIEW_PERMISSIONS, make_staff
from tests.receiver import ReceivedRequest

ED25519 = SignatureScheme.STANDARD_ED25519
# Svix's own test of its ed25519 signing (svix-server, worker.rs, test_asymmetric_key_signing);
# the same signature is the v1a example in the Standard Webhooks spec's headers section.
SVIX_PRIVATE_KEY = "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
SVIX_PUBLIC_KEY = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="
SVIX_MESSAGE = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
SVIX_SIGNATURE = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="


def entries_verified_by(public_key: str, request: ReceivedRequest) -> list[int]:
    """Which entries of the request's webhook-signature the public key verifies, computed with
    `cryptography` alone, as a receiver following the spec would."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request.body
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    verified = []
    for index, entry in enumerate(headers["webhook-signature"].split(" ")):
        version, _, signature = entry.partition(",")
        try:
            key.verify(base64.b64decode(signature), signed)
        except InvalidSignature:
            continue
        assert version == "v1a", entry
        verified.append(index)
    return verified


def request_for(receiver, path: str, event) -> ReceivedRequest:
    return next(r for r in receiver.received(path) if event.webhook_id.encode() in r.body)


def delivered(event, count: int = 1):
    return lambda: event.deliveries.filter(status=DeliveryStatus.SUCCEEDED).count() == count


# --- keys and signatures ------------------------------------------------------------------------


def test_v1a_signature_and_public_key_match_svix():
    msg_id, timestamp, body = SVIX_MESSAGE
    assert sign_standard([SVIX_PRIVATE_KEY], msg_id, timestamp, body) == SVIX_SIGNATURE
    assert EndpointSecret(secret=SVIX_PRIVATE_KEY).public_key == SVIX_PUBLIC_KEY


def test_a_generated_key_is_the_64_byte_form_and_its_public_key_is_the_one_cryptography_derives():
    private_key = generate_secret(ED25519)
    raw = base64.b64decode(private_key.removeprefix("whsk_"), validate=True)
    assert private_key.startswith("whsk_") and len(raw) == 64
    derived = Ed25519PrivateKey.from_private_bytes(raw[:32]).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw[32:] == derived
    assert EndpointSecret(secret=private_key).public_key == "whpk_" + base64.b64encode(derived).decode()
    assert generate_secret(SignatureScheme.STANDARD).startswith("whsec_")


MALFORMED_PRIVATE_KEYS = {
    "not base64": "whsk_not base64!",
    "the 32-byte seed alone": "whsk_" + base64.b64encode(b"\x01" * 32).decode(),
    "63 bytes": "whsk_" + base64.b64encode(base64.b64decode(SVIX_PRIVATE_KEY[5:])[:63]).decode(),
    # Svix's own test of a damaged key: its public half is not the seed's public key
    "public half not of the seed": SVIX_PRIVATE_KEY.replace("X0dRqSKJp4", "aaaaaaaaaa"),
    "a public key": SVIX_PUBLIC_KEY,
    "a shared secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=",
}


@pytest.mark.django_db
@pytest.mark.parametrize("value", MALFORMED_PRIVATE_KEYS.values(), ids=MALFORMED_PRIVATE_KEYS.keys())
def test_a_malformed_private_key_is_refused_and_nothing_is_written(value):
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url="https://example.com/hook", signature_scheme=ED25519, secret=value)
    message = " ".join(raised.value.messages)
    assert "whsk_" in message and value not in message
    assert not Endpoint.objects.exists() and not EndpointSecret.objects.exists()

    # nor on rotation
    endpoint = Endpoint.objects.create(url="https://example.com/hook", signature_scheme=ED25519)
    with pytest.raises(ValidationError):
        endpoint.rotate_secret(new_secret=value)
    assert endpoint.secrets.count() == 1


@pytest.mark.django_db
def test_a_private_key_on_a_shared_secret_endpoint_is_refused():
    for scheme in (SignatureScheme.STANDARD, SignatureScheme.TIMESTAMPED_HEX):
        with pytest.raises(ValidationError, match="needs signature_scheme 'standard_ed25519'"):
            Endpoint.objects.create(url="https://example.com/hook", signature_scheme=scheme, secret=SVIX_PRIVATE_KEY)
    assert not EndpointSecret.objects.exists()


# --- real deliveries, checked with cryptography -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_deliveries_to_an_ed25519_endpoint_verify_with_cryptography_from_its_public_key(celery_worker, receiver):
    # Given an endpoint that signs with a key pair; its receiver is given only the public key
    endpoint = Endpoint.objects.create(url=receiver.url("/ed25519"), signature_scheme=ED25519)
    public_key = endpoint.public_key
    assert public_key.startswith("whpk_") and endpoint.secret.startswith("whsk_")

    # When two events are delivered
    events = [publish("order.paid", {"order": number}) for number in (1, 2)]
    for event in events:
        wait_until(delivered(event))

    # Then each request carries one v1a entry that the public key verifies, and the standard headers
    for event in events:
        request = request_for(receiver, "/ed25519", event)
        headers = {name.lower(): value for name, value in request.headers.items()}
        assert headers["webhook-id"] == event.webhook_id
        assert abs(int(headers["webhook-timestamp"]) - timezone.now().timestamp()) < 60
        assert headers["webhook-signature"].startswith("v1a,") and " " not in headers["webhook-signature"]
        assert entries_verified_by(public_key, request) == [0]
    # and another key verifies nothing
    assert entries_verified_by(EndpointSecret(secret=generate_secret(ED25519)).public_key, request) == []


@pytest.mark.django_db(transaction=True)
def test_during_a_rotation_each_live_key_signs_its_own_v1a_entry(celery_worker, receiver):
    # Given an ed25519 endpoint whose key was rotated with a grace period: two live keys
    endpoint = Endpoint.objects.create(url=receiver.url("/rotating"), signature_scheme=ED25519)
    old_public = endpoint.public_key
    new_private = endpoint.rotate_secret(grace=timedelta(hours=1))
    new_public = endpoint.public_key
    assert new_private.startswith("whsk_") and new_public != old_public
    assert endpoint.public_keys() == [new_public, old_public]

    # When an event is delivered
    event = publish("order.paid", {"order": 3})
    wait_until(delivered(event))

    # Then the header has two v1a entries, newest first, each verifying alone with its own key
    request = request_for(receiver, "/rotating", event)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert entries_verified_by(new_public, request) == [0]
    assert entries_verified_by(old_public, request) == [1]


@pytest.mark.django_db(transaction=True)
def test_an_expired_key_stops_signing(celery_worker, receiver):
    # Given an ed25519 endpoint rotated with a grace that has now ended
    endpoint = Endpoint.objects.create(url=receiver.url("/expired"), signature_scheme=ED25519)
    old_public = endpoint.public_key
    endpoint.rotate_secret(grace=timedelta(hours=1))
    endpoint.secrets.filter(public_key=old_public).update(expires_at=timezone.now() - timedelta(seconds=1))

    # When an event is delivered
    event = publish("order.paid", {"order": 4})
    wait_until(delivered(event))

    # Then only the new key signs
    request = request_for(receiver, "/expired", event)
    assert entries_verified_by(endpoint.public_key, request) == [0]
    assert entries_verified_by(old_public, request) == []
    assert endpoint.public_keys() == [endpoint.public_key]


@pytest.mark.django_db(transaction=True)
def test_switching_to_ed25519_keeps_the_old_secret_signing_v1_during_the_grace(celery_worker, receiver):
    # Given a shared-secret endpoint whose receiver verifies v1 with the secret
    endpoint = Endpoint.objects.create(url=receiver.url("/switch"))
    old_secret = endpoint.secret

    # When it is switched to ed25519
    endpoint.signature_scheme = ED25519
    endpoint.save()

    # Then a new key pair signs, and the old secret until the grace ends (24 h)
    assert endpoint.secret.startswith("whsk_") and endpoint.public_key.startswith("whpk_")
    assert timedelta(hours=23, minutes=59) < endpoint.key_switched_until - timezone.now() <= timedelta(hours=24)
    assert endpoint.live_secrets() == [endpoint.secret, old_secret]
    event = publish("order.paid", {"order": 5})
    wait_until(delivered(event))
    request = request_for(receiver, "/switch", event)
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert standardwebhooks.Webhook(old_secret).verify(request.body, headers)["data"] == {"order": 5}
    assert entries_verified_by(endpoint.public_key, request) == [0]
    # and saving again rotates nothing more
    endpoint.save()
    assert endpoint.key_switched_until is None and endpoint.secrets.count() == 2


@pytest.mark.django_db
def test_switching_from_ed25519_to_the_stripe_form_signs_with_a_new_shared_secret_only():
    endpoint = Endpoint.objects.create(url="https://example.com/hook", signature_scheme=ED25519)
    endpoint.signature_scheme = SignatureScheme.TIMESTAMPED_HEX
    endpoint.save()

    secret = endpoint.secret
    assert secret.startswith("whsec_") and endpoint.public_key is None
    assert len(endpoint.live_secrets()) == 2  # the key pair is live, but cannot sign in this form
    headers = signature_headers(endpoint.signature_scheme, endpoint.live_secrets(), "evt_1", 1_800_000_000, b"{}")
    assert headers["X-Webhook-Signature"].count("v1=") == 1
    stripe.WebhookSignature.verify_header("{}", headers["X-Webhook-Signature"], secret, tolerance=None)


# --- at rest --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_private_key_is_encrypted_at_rest_and_only_the_public_key_is_in_the_clear(settings):
    endpoint = Endpoint.objects.create(
        url="https://example.com/hook", signature_scheme=ED25519, secret=SVIX_PRIVATE_KEY
    )

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM endpoints_endpointsecret WHERE endpoint_id = %s", [endpoint.pk])
        [row] = cursor.fetchall()
    text = repr(row)
    assert "whsk_" not in text and SVIX_PRIVATE_KEY.removeprefix("whsk_")[:20] not in text
    assert SVIX_PUBLIC_KEY in row
    [token] = [value for value in row if isinstance(value, str) and value.startswith("gAAAAA")]
    assert Fernet(settings.WEBHOOKS_SECRET_KEYS[0]).decrypt(token.encode()).decode() == SVIX_PRIVATE_KEY
    assert Endpoint.objects.get(pk=endpoint.pk).secret == SVIX_PRIVATE_KEY


@pytest.mark.django_db(transaction=True)
def test_reencrypt_secrets_covers_ed25519_keys(celery_worker, receiver, settings):
    # Given an ed25519 endpoint stored under the current encryption key
    old_key, new_key = settings.WEBHOOKS_SECRET_KEYS[0], Fernet.generate_key().decode()
    endpoint = Endpoint.objects.create(url=receiver.url("/reencrypted"), signature_scheme=ED25519)
    private_key, public_key = endpoint.secret, endpoint.public_key

    # When a new encryption key is put first and the command runs
    settings.WEBHOOKS_SECRET_KEYS = [new_key, old_key]
    out = StringIO()
    call_command("reencrypt_secrets", stdout=out)
    assert "endpoint secrets: 1 re-encrypted" in out.getvalue()

    # Then the key is under the new encryption key alone, unchanged
    settings.WEBHOOKS_SECRET_KEYS = [new_key]
    row = EndpointSecret.objects.get(endpoint=endpoint)
    with pytest.raises(InvalidToken):
        Fernet(old_key).decrypt(row.encrypted_secret.encode())
    assert (row.secret, row.public_key) == (private_key, public_key)
    # and deliveries still verify with the public key the receiver has
    event = publish("order.paid", {"order": 6})
    wait_until(delivered(event))
    assert entries_verified_by(public_key, request_for(receiver, "/reencrypted", event)) == [0]


# --- admin ----------------------------------------------------------------------------------------


def _client(username: str, permissions=None) -> Client:
    client = Client()
    client.force_login(make_staff(username, permissions) if permissions else make_staff(username))
    return client


@pytest.mark.django_db
def test_the_endpoint_page_lists_public_keys_never_the_private_key():
    # Given an ed25519 endpoint mid-rotation
    endpoint = Endpoint.objects.create(url="https://example.com/hook", signature_scheme=ED25519)
    endpoint.rotate_secret(grace=timedelta(hours=1))
    private_keys = endpoint.live_secrets()

    # Then operators and view-only staff see both public keys, and no private key anywhere
    for client in (_client("operator"), _client("viewer", VIEW_PERMISSIONS)):
        change_page = client.get(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])).content.decode()
        list_page = client.get(reverse("admin:endpoints_endpoint_changelist")).content.decode()
        for page in (change_page, list_page):
            assert "whsk_" not in page
            assert not any(key.removeprefix("whsk_")[:16] in page for key in private_keys)
        for public_key in endpoint.public_keys():
            assert f'<code class="webhooks-public-key">{public_key}</code>' in change_page


@pytest.mark.django_db
def test_a_new_ed25519_endpoint_in_admin_shows_its_public_key_not_its_private_key():
    client = _client("operator")
    form = {"url": "https://new.example.com/hook", "tenant": "", "description": "", "event_types": "[]"}
    form.update(headers="{}", sensitive_headers="[]", signature_scheme="standard_ed25519")
    page = client.post(reverse("admin:endpoints_endpoint_add"), form, follow=True).content.decode()

    endpoint = Endpoint.objects.get(url="https://new.example.com/hook")
    assert (
        f'<code class="webhooks-new-public-key" style="user-select:all;font-size:1.1em">{endpoint.public_key}' in page
    )
    assert "whsk_" not in page and endpoint.secret.removeprefix("whsk_")[:16] not in page

    # and after a rotation, the new public key
    data = {"action": "rotate_secrets", "_selected_action": [str(endpoint.pk)], "apply": "Rotate", "grace_hours": "1"}
    page = client.post(reverse("admin:endpoints_endpoint_changelist"), data, follow=True).content.decode()
    assert endpoint.public_key in page and "whsk_" not in page


def _change_form(endpoint: Endpoint, **changes) -> dict:
    form = {"url": endpoint.url, "tenant": endpoint.tenant, "description": "", "event_types": "[]"}
    return {
        **form,
        "headers": "{}",
        "sensitive_headers": "[]",
        "signature_scheme": endpoint.signature_scheme,
        **changes,
    }


@pytest.mark.django_db
def test_switching_to_ed25519_in_admin_needs_the_rotate_permission_and_shows_the_public_key():
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    url = reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])

    # A user who may change endpoints but not rotate secrets is refused, and nothing changes
    editor = _client("editor", ("endpoints.view_endpoint", "endpoints.change_endpoint"))
    page = editor.post(url, _change_form(endpoint, signature_scheme="standard_ed25519")).content.decode()
    assert "needs the permission to rotate signing secrets" in page
    assert Endpoint.objects.get(pk=endpoint.pk).signature_scheme == "standard" and endpoint.secrets.count() == 1

    # An operator switches, and lands on the page showing the new public key
    response = _client("operator").post(url, _change_form(endpoint, signature_scheme="standard_ed25519"), follow=True)
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    page = response.content.decode()
    assert endpoint.public_key in page and "whsk_" not in page
    assert endpoint.secrets.count() == 2
