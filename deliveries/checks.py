"""System checks: refuse dangerous or broken settings at start-up, not at 3 a.m. in a worker.

Every WEBHOOKS_* setting has its default in endpoints/app_settings.py; these checks see what the
host set. A value of the wrong type is webhooks.E000 (and the value checks wait until it is
fixed, so that one mistake gives one message, not a traceback).
"""

import os
from datetime import timedelta
from urllib.parse import urlsplit

from celery.schedules import BaseSchedule
from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from endpoints import secret_box
from endpoints.app_settings import DEFAULTS, PREFIX, webhook_settings

from . import catalog, hooks  # noqa: F401  (their system checks register on import)
from .health import health_windows
from .retry_policy import parse_schedule
from .verification import schedule as verification_schedule

# What each setting may be, where its default's type does not say it all.
ACCEPTED_TYPES: dict[str, tuple[type, ...]] = {
    "SECRET_KEYS": (list, tuple, str),  # a list, or a comma-separated string
    "ALLOWED_PORTS": (list, tuple, set, frozenset),
    "ALLOW_PRIVATE_NETWORKS": (bool,),
    "ALLOW_HTTP": (bool,),
    "RETENTION_SCHEDULE": (type(None), int, float, timedelta, BaseSchedule),
    "API_TENANT": (type(None), str),
    "API_CHECK_PERMISSIONS": (bool,),
}
TYPE_NAMES = {
    bool: "True or False",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a dict",
    type(None): "None",
    BaseSchedule: "a Celery schedule",
}


def _accepted(name: str) -> tuple[type, ...]:
    if name in ACCEPTED_TYPES:
        return ACCEPTED_TYPES[name]
    default = DEFAULTS[name]
    return (int, float) if isinstance(default, float) else (type(default),)


def setting_type_errors() -> list[Error]:
    """webhooks.E000 for each WEBHOOKS_* setting the host set to a value of the wrong type."""
    errors = []
    for name in DEFAULTS:
        if not hasattr(settings, PREFIX + name):
            continue
        value, accepted = getattr(settings, PREFIX + name), _accepted(name)
        if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
            wanted = " or ".join(TYPE_NAMES.get(t, t.__name__) for t in accepted)
            errors.append(Error(f"{PREFIX}{name} must be {wanted}, not {type(value).__name__}.", id="webhooks.E000"))
    return errors


@register()
def check_setting_types(app_configs, **kwargs):
    return setting_type_errors()


@register()
def check_webhook_settings(app_configs, **kwargs):
    if setting_type_errors():
        return []  # reported by check_setting_types; the comparisons below need the right types
    errors = [*check_pipeline_invariants()]
    if webhook_settings.RETRY_SCHEDULE:
        try:
            parse_schedule(webhook_settings.RETRY_SCHEDULE)
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id="webhooks.E001"))
    try:
        verification_schedule()
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="webhooks.E008"))
    try:
        health_windows()
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="webhooks.E003"))
    if not 0 < webhook_settings.HEALTH_THRESHOLD <= 1:
        errors.append(Error("WEBHOOKS_HEALTH_THRESHOLD must be a fraction in (0, 1], e.g. 0.95.", id="webhooks.E004"))
    if webhook_settings.RETENTION_BATCH_SIZE < 1 or webhook_settings.SWEEP_BATCH_SIZE < 1:
        errors.append(
            Error("WEBHOOKS_RETENTION_BATCH_SIZE and WEBHOOKS_SWEEP_BATCH_SIZE must be at least 1.", id="webhooks.E006")
        )
    if webhook_settings.RETENTION_SUCCEEDED_DAYS <= 0 or webhook_settings.RETENTION_FAILED_DAYS <= 0:
        errors.append(Error("WEBHOOKS_RETENTION_*_DAYS must be positive.", id="webhooks.E007"))
    if webhook_settings.BREAKER_THRESHOLD < 1:
        errors.append(Error("WEBHOOKS_BREAKER_THRESHOLD must be at least 1.", id="webhooks.E005"))
    if webhook_settings.REQUEUE_AFTER <= webhook_settings.SWEEP_INTERVAL:
        errors.append(
            Error(
                "WEBHOOKS_REQUEUE_AFTER must be longer than WEBHOOKS_SWEEP_INTERVAL, or every sweep "
                "would enqueue the same deliveries again.",
                id="webhooks.E002",
            )
        )
    if webhook_settings.ALLOW_PRIVATE_NETWORKS and not settings.DEBUG:
        errors.append(
            Warning(
                "WEBHOOKS_ALLOW_PRIVATE_NETWORKS is on outside DEBUG: endpoints can reach this "
                "network's internal addresses (SSRF).",
                id="webhooks.W001",
            )
        )
    return errors


def check_pipeline_invariants() -> list[Error]:
    """Timeouts, batch sizes and the claim against each other and the broker (README "Settings")."""
    errors = []
    if webhook_settings.REQUEST_TIMEOUT <= 0 or webhook_settings.CONNECT_TIMEOUT <= 0:
        errors.append(
            Error("WEBHOOKS_REQUEST_TIMEOUT and WEBHOOKS_CONNECT_TIMEOUT must be positive.", id="webhooks.E020")
        )
    if (
        webhook_settings.FANOUT_BATCH_SIZE < 1
        or webhook_settings.SEND_BATCH_SIZE < 1
        or webhook_settings.SEND_BATCH_SECONDS <= 0
    ):
        errors.append(
            Error(
                "WEBHOOKS_FANOUT_BATCH_SIZE and WEBHOOKS_SEND_BATCH_SIZE must be at least 1, "
                "WEBHOOKS_SEND_BATCH_SECONDS positive.",
                id="webhooks.E021",
            )
        )
    if not 0 <= webhook_settings.RETRY_JITTER < 1:
        errors.append(Error("WEBHOOKS_RETRY_JITTER must be in [0, 1), e.g. 0.2.", id="webhooks.E022"))
    visibility = broker_visibility_timeout()
    if visibility is not None and webhook_settings.MAX_COUNTDOWN * 2 >= visibility:
        # A countdown message is held unacknowledged by the worker until it fires; past the
        # visibility timeout Redis hands it out again and the attempt runs twice.
        errors.append(
            Error(
                f"WEBHOOKS_MAX_COUNTDOWN ({webhook_settings.MAX_COUNTDOWN:g} s) must stay below half of the "
                f"broker's visibility timeout ({visibility:g} s), or a retry waiting in the broker is "
                "delivered twice.",
                hint="Lower WEBHOOKS_MAX_COUNTDOWN or raise CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'].",
                id="webhooks.E023",
            )
        )
    if webhook_settings.CLAIM_MARGIN <= 0:
        # A claim lasts connect + request timeout + margin: the margin is the time left, after
        # the slowest request, to record the attempt before another worker may send it again.
        errors.append(
            Error(
                "WEBHOOKS_CLAIM_MARGIN must be positive: it is the time a claim lasts beyond the longest "
                "request, to record the attempt before the delivery may be sent again.",
                id="webhooks.E024",
            )
        )
    return errors


def broker_visibility_timeout() -> float | None:
    """The visibility timeout of a Redis or SQS broker as the host configured it through Django
    settings (Celery's default 3600 s when unset); None for brokers without one."""
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if urlsplit(url).scheme not in ("redis", "rediss", "sentinel", "sqs"):
        return None
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    timeout = options.get("visibility_timeout", 3600)
    return float(timeout) if isinstance(timeout, int | float) else None


@register()
def check_security_settings(app_configs, **kwargs):
    """Encryption keys, transport policy and TLS settings (README "Security")."""
    errors = []
    if not secret_box.configured_keys():
        if settings.DEBUG:
            errors.append(
                Warning(
                    "WEBHOOKS_SECRET_KEYS is not set: endpoint secrets are encrypted with a development "
                    "key derived from SECRET_KEY, which protects nothing. Set WEBHOOKS_SECRET_KEYS "
                    "before storing real secrets.",
                    hint=secret_box.GENERATE_HINT,
                    id="webhooks.W010",
                )
            )
        else:
            errors.append(
                Error(
                    "WEBHOOKS_SECRET_KEYS is not set: endpoint secrets and client keys are stored "
                    "encrypted, and outside DEBUG there is no fallback key.",
                    hint=secret_box.GENERATE_HINT,
                    id="webhooks.E010",
                )
            )
    errors.extend(
        Error(message, hint=secret_box.GENERATE_HINT, id="webhooks.E011") for message in secret_box.key_errors()
    )
    if webhook_settings.ALLOW_HTTP and not settings.DEBUG:
        errors.append(
            Warning(
                "WEBHOOKS_ALLOW_HTTP is on outside DEBUG: webhooks and their signatures can travel "
                "unencrypted and be read or altered on the way.",
                id="webhooks.W011",
            )
        )
    ports = webhook_settings.ALLOWED_PORTS
    if not isinstance(ports, list | tuple | set | frozenset) or not all(
        isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535 for port in ports
    ):
        errors.append(Error("WEBHOOKS_ALLOWED_PORTS must be a list of port numbers (1-65535).", id="webhooks.E012"))
    bundle = webhook_settings.CA_BUNDLE
    if bundle and not os.path.exists(bundle):
        errors.append(Error(f"WEBHOOKS_CA_BUNDLE names {bundle!r}, which does not exist.", id="webhooks.E013"))
    return errors
