"""Secrets at rest: encrypted in the database with WEBHOOKS_SECRET_KEYS, readable through
`endpoint.secret`, re-encrypted under a new key without interrupting delivery; production
refuses to start without a key."""

import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import standardwebhooks
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from deliveries import publish
from deliveries.checks import check_security_settings
from deliveries.models import DeliveryStatus
from endpoints import secret_box
from endpoints.models import Endpoint, EndpointSecret
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parent.parent
OLD_KEY = "RmnYZiSad7J4jTqxryARhuTyIa61XLu7uIKMznfNGCQ="  # tests/settings.py
NEW_KEY = "dGhpcyBpcyBhIHRlc3Qga2V5OiAzMiBieXRlcyEhISE="  # 32 bytes, url-safe base64
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo="


def raw_secret_rows(endpoint_id: int) -> list[tuple]:
    """The secret rows exactly as PostgreSQL stores them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM endpoints_endpointsecret WHERE endpoint_id = %s ORDER BY id", [endpoint_id])
        return cursor.fetchall()


@pytest.mark.django_db
def test_stored_secret_is_not_readable_in_the_database_row():
    # Given an endpoint with a known secret
    endpoint = Endpoint.objects.create(url="https://example.com/hook", secret=SECRET)

    # When its row is read straight from the database
    [row] = raw_secret_rows(endpoint.pk)

    # Then neither the secret nor its key appears in it: only a Fernet token under our key
    text = repr(row)
    assert SECRET not in text
    assert SECRET.removeprefix("whsec_") not in text
    [token] = [value for value in row if isinstance(value, str) and value.startswith("gAAAAA")]
    assert Fernet(OLD_KEY).decrypt(token.encode()).decode() == SECRET
    # and the model still gives the plain secret to the code that signs
    assert Endpoint.objects.get(pk=endpoint.pk).secret == SECRET
    assert Endpoint.objects.get(pk=endpoint.pk).live_secrets() == [SECRET]


@pytest.mark.django_db
def test_the_same_secret_encrypts_differently_every_time():
    # Given two endpoints given the same secret
    a = Endpoint.objects.create(url="https://example.com/a", secret=SECRET)
    b = Endpoint.objects.create(url="https://example.com/b", secret=SECRET)

    # Then their stored tokens differ (random IV): equal secrets cannot be spotted in the table
    assert a.secrets.get().encrypted_secret != b.secrets.get().encrypted_secret


@pytest.mark.django_db
def test_rotate_secret_returns_the_new_secret_and_the_old_one_expires_after_the_grace():
    # Given an endpoint
    endpoint = Endpoint.objects.create(url="https://example.com/hook", secret=SECRET)
    before = timezone.now()

    # When its secret is rotated with a grace of two hours
    new = endpoint.rotate_secret(grace=timedelta(hours=2))

    # Then the new secret signs first, the old one signs too until the grace ends
    assert new.startswith("whsec_") and new != SECRET
    assert endpoint.secret == new
    assert endpoint.live_secrets() == [new, SECRET]
    old_row, new_row = endpoint.secrets.order_by("id")
    assert before + timedelta(hours=2) <= old_row.expires_at <= timezone.now() + timedelta(hours=2)
    assert new_row.expires_at is None
    assert endpoint.secrets.live(now=old_row.expires_at).count() == 1


@pytest.mark.django_db
def test_reading_a_secret_without_its_key_says_what_to_do_and_never_shows_the_token(settings):
    # Given a secret stored under the test key
    endpoint = Endpoint.objects.create(url="https://example.com/hook", secret=SECRET)
    token = endpoint.secrets.get().encrypted_secret

    # When the key that wrote it is no longer configured
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY]

    # Then reading it fails with a configuration error naming the way out, not the token
    with pytest.raises(secret_box.SecretKeyError) as raised:
        Endpoint.objects.get(pk=endpoint.pk).secret  # noqa: B018
    message = str(raised.value)
    assert "none of the WEBHOOKS_SECRET_KEYS opens it" in message
    assert "reencrypt_secrets" in message
    assert token not in message and token[:20] not in message


@pytest.mark.django_db(transaction=True)
def test_rotating_the_encryption_key_keeps_every_endpoint_working(celery_worker, receiver, settings):
    # Given two endpoints, one in the middle of a secret rotation (two live secrets), stored
    # under the old encryption key
    settings.WEBHOOKS_SECRET_KEYS = [OLD_KEY]
    plain = Endpoint.objects.create(url=receiver.url("/plain"))
    rotating = Endpoint.objects.create(url=receiver.url("/rotating"))
    rotating_old, rotating_new = rotating.secret, rotating.rotate_secret()
    secrets = {"/plain": [plain.secret], "/rotating": [rotating_new, rotating_old]}

    def deliver_and_verify(number: int) -> None:
        event = publish("order.paid", {"order": number})
        wait_until(lambda: event.deliveries.filter(status=DeliveryStatus.SUCCEEDED).count() == 2)
        for path, path_secrets in secrets.items():
            request = next(r for r in receiver.received(path) if event.webhook_id.encode() in r.body)
            headers = {k.lower(): v for k, v in request.headers.items()}
            for secret in path_secrets:
                assert standardwebhooks.Webhook(secret).verify(request.body, headers)["data"] == {"order": number}

    # A real delivery verifies before the key changes
    deliver_and_verify(1)

    # When a new key is put first (the old one kept for reading) and the command runs
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY, OLD_KEY]
    out = StringIO()
    call_command("reencrypt_secrets", "--batch-size", "2", stdout=out)

    # Then every secret row is under the new key alone
    assert "endpoint secrets: 3 re-encrypted, 0 already under the newest key, 0 unreadable" in out.getvalue()
    for row in EndpointSecret.objects.all():
        Fernet(NEW_KEY).decrypt(row.encrypted_secret.encode())
        with pytest.raises(InvalidToken):
            Fernet(OLD_KEY).decrypt(row.encrypted_secret.encode())

    # and with the old key removed, every endpoint still signs with the same secrets
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY]
    deliver_and_verify(2)

    # and running the command again has nothing left to do
    out = StringIO()
    call_command("reencrypt_secrets", "--json", stdout=out)
    assert '"endpoint secrets": {"current": 3, "reencrypted": 0, "unreadable": 0}' in out.getvalue()


@pytest.mark.django_db
def test_reencrypt_reports_values_no_key_opens_and_fails(settings):
    # Given a secret written under a key that is then dropped
    Endpoint.objects.create(url="https://example.com/hook", secret=SECRET)
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY]

    # When the command runs
    out = StringIO()
    with pytest.raises(CommandError, match="1 values could not be decrypted"):
        call_command("reencrypt_secrets", stdout=out)

    # Then it says so and leaves the row as it was
    assert "endpoint secrets: 0 re-encrypted, 0 already under the newest key, 1 unreadable" in out.getvalue()
    settings.WEBHOOKS_SECRET_KEYS = [OLD_KEY]
    assert Endpoint.objects.get().secret == SECRET


@pytest.mark.django_db(transaction=True)
def test_migration_encrypts_existing_plain_secrets_and_reverses():
    # Given the schema before encryption, with a plain secret in it
    executor = MigrationExecutor(connection)
    before = [("endpoints", "0003_operator_permissions")]
    executor.migrate(before)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO endpoints_endpoint (url, tenant, description, event_types, is_active, disabled_reason, "
            "signature_scheme, headers, consecutive_failures, created_at, updated_at) VALUES "
            "('https://example.com/hook', '', '', '[]', true, '', 'standard', '{}', 0, now(), now()) RETURNING id"
        )
        [endpoint_id] = cursor.fetchone()
        cursor.execute(
            "INSERT INTO endpoints_endpointsecret (endpoint_id, secret, created_at) VALUES (%s, %s, now())",
            [endpoint_id, SECRET],
        )

    try:
        # When the migrations run forward
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

        # Then the row holds a token, and the model reads the same secret
        assert SECRET not in repr(raw_secret_rows(endpoint_id))
        assert Endpoint.objects.get(pk=endpoint_id).secret == SECRET

        # and going back restores the plain column
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        with connection.cursor() as cursor:
            cursor.execute("SELECT secret FROM endpoints_endpointsecret WHERE endpoint_id = %s", [endpoint_id])
            assert cursor.fetchone() == (SECRET,)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_production_without_an_encryption_key_is_refused_by_the_system_check(settings):
    # Given production settings without WEBHOOKS_SECRET_KEYS
    settings.DEBUG = False
    settings.WEBHOOKS_SECRET_KEYS = []
    settings.WEBHOOKS_ALLOW_HTTP = False

    # When the checks run, start-up is refused with an Error
    [error] = check_security_settings(None)
    assert error.id == "webhooks.E010"
    assert error.is_serious()
    assert "Fernet.generate_key()" in error.hint
    # and nothing can be encrypted or decrypted either
    with pytest.raises(secret_box.SecretKeyError, match="WEBHOOKS_SECRET_KEYS is not set"):
        secret_box.encrypt(SECRET)


def test_debug_without_a_key_falls_back_to_a_development_key_with_a_warning(settings):
    # Given DEBUG without WEBHOOKS_SECRET_KEYS
    settings.DEBUG = True
    settings.WEBHOOKS_SECRET_KEYS = []

    # Then the check warns, and secrets are encrypted with the key derived from SECRET_KEY
    [warning] = check_security_settings(None)
    assert warning.id == "webhooks.W010"
    assert not warning.is_serious()
    token = secret_box.encrypt(SECRET)
    assert Fernet(secret_box.development_key()).decrypt(token.encode()).decode() == SECRET


def test_a_malformed_key_is_refused_without_showing_it(settings):
    settings.DEBUG = True
    settings.WEBHOOKS_SECRET_KEYS = [OLD_KEY, "not-a-key-at-all"]
    errors = check_security_settings(None)
    assert [e.id for e in errors] == ["webhooks.E011"]
    assert "key 2 of WEBHOOKS_SECRET_KEYS is not a Fernet key" in errors[0].msg
    assert "not-a-key-at-all" not in errors[0].msg


def test_http_allowed_outside_debug_and_a_missing_ca_bundle_are_reported(settings, tmp_path):
    settings.DEBUG = False
    settings.WEBHOOKS_ALLOW_HTTP = True
    settings.WEBHOOKS_CA_BUNDLE = str(tmp_path / "missing.pem")
    assert sorted(e.id for e in check_security_settings(None)) == ["webhooks.E013", "webhooks.W011"]


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOKS_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="webhooks_project.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="a-production-like-secret-key-for-this-test-only",
        DATABASE_URL=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        CELERY_BROKER_URL=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        **extra,
    )
    return env


def test_production_start_up_refuses_without_a_key_and_production_settings_refuse_http():
    # Given the real settings module with DJANGO_DEBUG=0 and no WEBHOOKS_SECRET_KEYS
    # When manage.py starts (the web process runs `manage.py migrate` first, which checks)
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"],
        check=False,
        cwd=REPO,
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it stops with the error
    assert checked.returncode != 0
    assert "webhooks.E010" in checked.stderr

    # And with a key it starts, and refuses plain http endpoints while accepting https
    script = (
        "import django; django.setup()\n"
        "from django.core.exceptions import ValidationError\n"
        "from endpoints.validation import validate_webhook_url\n"
        "validate_webhook_url('https://example.com/hook')\n"
        "try:\n"
        "    validate_webhook_url('http://example.com/hook')\n"
        "except ValidationError as exc:\n"
        "    print('refused:', exc.messages[0])\n"
    )
    with_key = _production_env(WEBHOOKS_SECRET_KEYS=NEW_KEY)
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"],
        check=False,
        cwd=REPO,
        env=with_key,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    run = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=REPO, env=with_key, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "refused: URL must use https" in run.stdout
