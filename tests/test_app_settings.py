"""The apps' own settings: every WEBHOOKS_* setting has a default inside the apps, so a host
that sets none works; wrong types and broken invariants are system checks with ids."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.checks import run_checks

from deliveries.checks import check_pipeline_invariants, setting_type_errors
from endpoints.app_settings import DEFAULTS, PREFIX, webhook_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def bare_settings(settings):
    """The test settings with every WEBHOOKS_* setting removed, as a host that sets none."""
    for name in DEFAULTS:
        if hasattr(django_settings, PREFIX + name):
            delattr(settings, PREFIX + name)
    return settings


def ids(messages) -> list[str]:
    return sorted(message.id for message in messages)


def test_a_host_that_sets_no_webhook_setting_gets_the_defaults(bare_settings):
    bare_settings.DEBUG = False
    assert not hasattr(django_settings, "WEBHOOKS_REQUEST_TIMEOUT")
    assert webhook_settings.REQUEST_TIMEOUT == 30.0
    assert webhook_settings.SEND_BATCH_SIZE == 20
    assert webhook_settings.MODEL_HOOKS == {}
    # Private networks and plain http follow DEBUG when unset: off in production
    assert webhook_settings.ALLOW_PRIVATE_NETWORKS is False and webhook_settings.ALLOW_HTTP is False
    bare_settings.DEBUG = True
    assert webhook_settings.ALLOW_PRIVATE_NETWORKS is True and webhook_settings.ALLOW_HTTP is True
    # and the checks find nothing wrong but the missing encryption key (a warning in DEBUG)
    assert [m.id for m in run_checks() if m.id.startswith("webhooks.")] == ["webhooks.W010"]


def test_a_setting_the_host_sets_wins_and_is_read_at_each_access(settings):
    settings.WEBHOOKS_SEND_BATCH_SIZE = 7
    assert webhook_settings.SEND_BATCH_SIZE == 7
    settings.WEBHOOKS_SEND_BATCH_SIZE = 9
    assert webhook_settings.SEND_BATCH_SIZE == 9


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no webhook setting 'REQUEST_TIMEOUTS'"):
        webhook_settings.REQUEST_TIMEOUTS  # noqa: B018


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REQUEST_TIMEOUT", "30"),
        ("SEND_BATCH_SIZE", 2.5),
        ("SEND_BATCH_SIZE", True),
        ("ALLOW_HTTP", "0"),
        ("MODEL_HOOKS", []),
        ("ALLOWED_PORTS", "443"),
        ("API_CHECK_PERMISSIONS", "1"),
    ],
)
def test_a_value_of_the_wrong_type_is_E000_and_no_traceback(settings, name, value):
    setattr(settings, PREFIX + name, value)
    errors = setting_type_errors()
    assert ids(errors) == ["webhooks.E000"]
    assert f"{PREFIX}{name} must be" in errors[0].msg
    # and the full check run reports it without raising on the comparisons
    assert "webhooks.E000" in ids(run_checks())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"WEBHOOKS_REQUEST_TIMEOUT": 0}, "webhooks.E020"),
        ({"WEBHOOKS_CONNECT_TIMEOUT": -1.0}, "webhooks.E020"),
        ({"WEBHOOKS_SEND_BATCH_SIZE": 0}, "webhooks.E021"),
        ({"WEBHOOKS_SEND_BATCH_SECONDS": 0.0}, "webhooks.E021"),
        ({"WEBHOOKS_RETRY_JITTER": 1.0}, "webhooks.E022"),
        (
            {
                "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
                "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 100},
                "WEBHOOKS_MAX_COUNTDOWN": 60.0,
            },
            "webhooks.E023",
        ),
        ({"WEBHOOKS_CLAIM_MARGIN": 0.0}, "webhooks.E024"),
    ],
)
def test_a_broken_invariant_is_a_check_with_its_id(settings, changes, expected):
    for name, value in changes.items():
        setattr(settings, name, value)
    assert ids(check_pipeline_invariants()) == [expected]
    assert expected in ids(run_checks())


def test_the_countdown_check_applies_to_brokers_with_a_visibility_timeout_only(settings):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 100}
    settings.WEBHOOKS_MAX_COUNTDOWN = 60.0
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
    assert check_pipeline_invariants() == []
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}  # Celery's default visibility timeout: 3600 s
    assert check_pipeline_invariants() == []


def test_a_host_settings_module_with_no_webhook_settings_passes_the_checks(tmp_path):
    # Given a host project whose settings name the apps and nothing of ours
    (tmp_path / "bare_host_settings.py").write_text(
        textwrap.dedent(
            """
            SECRET_KEY = "bare-host-test-key"
            DEBUG = True
            USE_TZ = True
            INSTALLED_APPS = [
                "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                "django.contrib.sessions", "django.contrib.messages", "django_celery_beat",
                "endpoints", "deliveries",
            ]
            DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
            TEMPLATES = [{
                "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                "OPTIONS": {"context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]},
            }]
            MIDDLEWARE = [
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
                "django.contrib.messages.middleware.MessageMiddleware",
            ]
            """
        )
    )
    script = (
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('check', fail_level='ERROR')\n"
        "from endpoints.app_settings import webhook_settings\n"
        "print('timeout', webhook_settings.REQUEST_TIMEOUT)\n"
    )
    # When Django starts with them and runs the system checks
    run = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{tmp_path}:{REPO}",
            "DJANGO_SETTINGS_MODULE": "bare_host_settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then it starts, with the defaults (only the development-key warning is said)
    assert run.returncode == 0, run.stderr
    assert "timeout 30.0" in run.stdout
    assert "webhooks.E" not in run.stderr + run.stdout
