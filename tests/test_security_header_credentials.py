"""Credentials in custom headers (issue 11, finding 1): the value of a sensitive header is
encrypted at rest, sent to the receiver, never shown in admin (view-only or not), replaceable
but never readable by an operator, re-encrypted with the signing secrets, and migrated."""

import json
import secrets as random_secrets
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse

from deliveries import publish
from deliveries.models import DeliveryAttempt, DeliveryStatus
from endpoints.custom_headers import HIDDEN
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.operators import OPERATOR_PERMISSIONS, VIEW_PERMISSIONS, make_staff

OLD_KEY = "RmnYZiSad7J4jTqxryARhuTyIa61XLu7uIKMznfNGCQ="  # tests/settings.py
NEW_KEY = "dGhpcyBpcyBhIHRlc3Qga2V5OiAzMiBieXRlcyEhISE="


def bearer() -> str:
    return "Bearer tok_" + random_secrets.token_urlsafe(24)


def raw_endpoint_row(endpoint_id: int) -> str:
    """The endpoint's row exactly as PostgreSQL stores it, as text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM endpoints_endpoint WHERE id = %s", [endpoint_id])
        return repr(cursor.fetchone())


def change_form(endpoint: Endpoint, **changes: str) -> dict[str, str]:
    """The admin change form of `endpoint` as posted, with `changes`."""
    form = {
        "url": endpoint.url,
        "tenant": endpoint.tenant,
        "description": endpoint.description,
        "event_types": json.dumps(endpoint.event_types),
        "signature_scheme": endpoint.signature_scheme,
        "headers": json.dumps(endpoint.headers),
        "sensitive_headers": json.dumps(endpoint.sensitive_headers),
    }
    return {**form, **changes}


@pytest.mark.django_db(transaction=True)
def test_a_listed_sensitive_header_is_encrypted_at_rest_and_still_sent(celery_worker, receiver):
    # Given an endpoint with a bearer token in a header listed as sensitive, and a plain header
    token, partner = bearer(), "partner-" + random_secrets.token_urlsafe(16)
    endpoint = Endpoint.objects.create(
        url=receiver.url("/hook"),
        headers={"Authorization": token, "X-Partner": partner, "X-Team": "payments"},
        sensitive_headers=["X-Partner"],
    )

    # Then the database row holds neither value, only a token under our key; the plain header stays readable
    row = raw_endpoint_row(endpoint.pk)
    assert token not in row and partner not in row and "payments" in row
    stored = Endpoint.objects.get(pk=endpoint.pk)
    assert stored.headers == {"Authorization": HIDDEN, "X-Partner": HIDDEN, "X-Team": "payments"}
    assert json.loads(Fernet(OLD_KEY).decrypt(stored.encrypted_headers.encode())) == {
        "Authorization": token,
        "X-Partner": partner,
    }

    # When an event is delivered, the receiver gets the real values
    publish("order.paid", {"order": 1})
    [request] = receiver.wait_for(1)
    assert request.headers["Authorization"] == token
    assert request.headers["X-Partner"] == partner
    assert request.headers["X-Team"] == "payments"
    # and the attempt record has them redacted
    wait_until(DeliveryAttempt.objects.exists)
    recorded = DeliveryAttempt.objects.get().request_headers
    assert recorded["Authorization"] == recorded["X-Partner"] == "[redacted]"


@pytest.mark.django_db
def test_staff_with_view_permission_only_never_see_a_header_credential():
    # Given an endpoint with a bearer token in a sensitive header
    token = bearer()
    endpoint = Endpoint.objects.create(
        url="https://receiver.example.com/hook", headers={"Authorization": token}, sensitive_headers=["Authorization"]
    )
    viewer = Client()
    viewer.force_login(make_staff("viewer", VIEW_PERMISSIONS))

    # When a view-only staff user opens the endpoint's page and the list
    page = viewer.get(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk]))
    listing = viewer.get(reverse("admin:endpoints_endpoint_changelist"))

    # Then the header is named, its value is not
    assert page.status_code == 200 and listing.status_code == 200
    html = page.content.decode()
    assert "Authorization" in html and HIDDEN in html
    assert token not in html and token.split()[1] not in html
    assert token.split()[1] not in listing.content.decode()


@pytest.mark.django_db
def test_an_operator_keeps_or_replaces_a_header_credential_without_reading_it():
    # Given an endpoint with a credential, and an operator allowed to change endpoints
    old, new = bearer(), bearer()
    endpoint = Endpoint.objects.create(
        url="https://receiver.example.com/hook",
        headers={"Authorization": old, "X-Team": "payments"},
        sensitive_headers=["Authorization"],
    )
    operator = Client()
    operator.force_login(make_staff("operator", OPERATOR_PERMISSIONS))
    url = reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])

    # The edit form shows the placeholder, never the value
    form_html = operator.get(url).content.decode()
    assert old.split()[1] not in form_html and HIDDEN in form_html

    # When the operator saves the form with the placeholder left as it is (another field changed)
    response = operator.post(url, change_form(Endpoint.objects.get(pk=endpoint.pk), description="edited"))
    assert response.status_code == 302
    # Then the credential is kept
    assert Endpoint.objects.get(pk=endpoint.pk).request_headers()["Authorization"] == old

    # When the operator writes a new value in its place
    headers = json.dumps({"Authorization": new, "X-Team": "payments"})
    response = operator.post(url, change_form(Endpoint.objects.get(pk=endpoint.pk), headers=headers))
    assert response.status_code == 302
    # Then it is replaced, stored hidden, and the old one is gone from the row
    stored = Endpoint.objects.get(pk=endpoint.pk)
    assert stored.request_headers() == {"Authorization": new, "X-Team": "payments"}
    assert stored.headers["Authorization"] == HIDDEN
    row = raw_endpoint_row(endpoint.pk)
    assert old.split()[1] not in row and new.split()[1] not in row


@pytest.mark.django_db
def test_a_hidden_value_is_never_revealed_by_unmarking_it_or_kept_when_nothing_is_stored():
    # Given an endpoint with a listed sensitive header
    endpoint = Endpoint.objects.create(
        url="https://receiver.example.com/hook", headers={"X-Partner": "p-1234"}, sensitive_headers=["X-Partner"]
    )
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    assert endpoint.headers == {"X-Partner": HIDDEN}

    # When the header is taken off the sensitive list while keeping the placeholder
    endpoint.sensitive_headers = []
    with pytest.raises(ValidationError, match="keeps its hidden value only while it is listed") as raised:
        endpoint.save()
    # Then it is refused (the value would become readable), saying which field is wrong
    assert "headers" in raised.value.message_dict
    assert Endpoint.objects.get(pk=endpoint.pk).sensitive_headers == ["X-Partner"]

    # and a placeholder that stands for nothing stored is refused too
    with pytest.raises(ValidationError, match="has no stored value"):
        Endpoint.objects.create(url="https://receiver.example.com/hook", headers={"Authorization": HIDDEN})

    # while un-marking it with a new value makes it a plain header, and removing it drops the stored value
    endpoint.headers = {"X-Partner": "now-public"}
    endpoint.save()
    stored = Endpoint.objects.get(pk=endpoint.pk)
    assert stored.headers == {"X-Partner": "now-public"} and stored.encrypted_headers == ""


@pytest.mark.django_db
def test_header_names_that_say_credential_are_hidden_even_when_not_listed():
    endpoint = Endpoint.objects.create(
        url="https://receiver.example.com/hook", headers={"X-Api-Key": "k-123456", "X-Session-Id": "s-1"}
    )
    stored = Endpoint.objects.get(pk=endpoint.pk)
    assert stored.headers == {"X-Api-Key": HIDDEN, "X-Session-Id": HIDDEN}
    assert stored.request_headers() == {"X-Api-Key": "k-123456", "X-Session-Id": "s-1"}
    assert "k-123456" not in raw_endpoint_row(endpoint.pk)


@pytest.mark.django_db
def test_reencrypt_secrets_rewrites_header_credentials_under_the_new_key(settings):
    # Given a credential stored under the old key, and an endpoint with no sensitive header
    token = bearer()
    endpoint = Endpoint.objects.create(url="https://receiver.example.com/hook", headers={"Authorization": token})
    Endpoint.objects.create(url="https://receiver.example.com/other", headers={"X-Team": "payments"})

    # When a new key is put first and the command runs
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY, OLD_KEY]
    out = StringIO()
    call_command("reencrypt_secrets", stdout=out)

    # Then the credential is under the new key alone, and the endpoint without one is not counted
    assert "sensitive header values: 1 re-encrypted, 0 already under the newest key, 0 unreadable" in out.getvalue()
    stored = Endpoint.objects.get(pk=endpoint.pk)
    with pytest.raises(InvalidToken):
        Fernet(OLD_KEY).decrypt(stored.encrypted_headers.encode())
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY]
    assert Endpoint.objects.get(pk=endpoint.pk).request_headers() == {"Authorization": token}


@pytest.mark.django_db(transaction=True)
def test_migration_encrypts_existing_header_credentials_and_reverses():
    # Given the schema before header encryption, with a credential in plain text
    token = bearer()
    before = [("endpoints", "0005_sensitive_headers_client_certificate")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    plain_headers = {"Authorization": token, "X-Partner": "p-98765", "X-Team": "payments"}
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO endpoints_endpoint (url, tenant, description, event_types, is_active, disabled_reason, "
            "signature_scheme, headers, sensitive_headers, consecutive_failures, created_at, updated_at) VALUES "
            "('https://example.com/hook', '', '', '[]', true, '', 'standard', %s, %s, 0, now(), now()) RETURNING id",
            [json.dumps(plain_headers), json.dumps(["x-partner"])],
        )
        [endpoint_id] = cursor.fetchone()
    try:
        # When the migrations run forward
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

        # Then the row no longer holds the credentials, and the model sends them as before
        row = raw_endpoint_row(endpoint_id)
        assert token not in row and "p-98765" not in row and "payments" in row
        assert Endpoint.objects.get(pk=endpoint_id).request_headers() == plain_headers

        # and going back restores the plain values
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        with connection.cursor() as cursor:
            cursor.execute("SELECT headers FROM endpoints_endpoint WHERE id = %s", [endpoint_id])
            [headers] = cursor.fetchone()
        assert (json.loads(headers) if isinstance(headers, str) else headers) == plain_headers
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_a_delivery_after_the_credential_is_replaced_sends_the_new_value(celery_worker, receiver):
    old, new = bearer(), bearer()
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), headers={"Authorization": old})
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    endpoint.headers = {"Authorization": new}
    endpoint.save()

    event = publish("order.paid", {"order": 2})
    wait_until(lambda: event.deliveries.filter(status=DeliveryStatus.SUCCEEDED).exists())
    [request] = receiver.received("/hook")
    assert request.headers["Authorization"] == new
