"""System checks: refuse dangerous or broken settings at start-up, not at 3 a.m. in a worker."""

import os

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from endpoints import secret_box

from . import catalog, hooks  # noqa: F401  (their system checks register on import)
from .health import health_windows
from .retry_policy import parse_schedule


@register()
def check_webhook_settings(app_configs, **kwargs):
    errors = []
    if settings.WEBHOOKS_RETRY_SCHEDULE:
        try:
            parse_schedule(settings.WEBHOOKS_RETRY_SCHEDULE)
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id="webhooks.E001"))
    try:
        health_windows()
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="webhooks.E003"))
    if not 0 < settings.WEBHOOKS_HEALTH_THRESHOLD <= 1:
        errors.append(Error("WEBHOOKS_HEALTH_THRESHOLD must be a fraction in (0, 1], e.g. 0.95.", id="webhooks.E004"))
    if settings.WEBHOOKS_RETENTION_BATCH_SIZE < 1 or settings.WEBHOOKS_SWEEP_BATCH_SIZE < 1:
        errors.append(
            Error("WEBHOOKS_RETENTION_BATCH_SIZE and WEBHOOKS_SWEEP_BATCH_SIZE must be at least 1.", id="webhooks.E006")
        )
    if settings.WEBHOOKS_RETENTION_SUCCEEDED_DAYS <= 0 or settings.WEBHOOKS_RETENTION_FAILED_DAYS <= 0:
        errors.append(Error("WEBHOOKS_RETENTION_*_DAYS must be positive.", id="webhooks.E007"))
    if settings.WEBHOOKS_BREAKER_THRESHOLD < 1:
        errors.append(Error("WEBHOOKS_BREAKER_THRESHOLD must be at least 1.", id="webhooks.E005"))
    if settings.WEBHOOKS_REQUEUE_AFTER <= settings.WEBHOOKS_SWEEP_INTERVAL:
        errors.append(
            Error(
                "WEBHOOKS_REQUEUE_AFTER must be longer than WEBHOOKS_SWEEP_INTERVAL, or every sweep "
                "would enqueue the same deliveries again.",
                id="webhooks.E002",
            )
        )
    if settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS and not settings.DEBUG:
        errors.append(
            Warning(
                "WEBHOOKS_ALLOW_PRIVATE_NETWORKS is on outside DEBUG: endpoints can reach this "
                "network's internal addresses (SSRF).",
                id="webhooks.W001",
            )
        )
    return errors


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
    if settings.WEBHOOKS_ALLOW_HTTP and not settings.DEBUG:
        errors.append(
            Warning(
                "WEBHOOKS_ALLOW_HTTP is on outside DEBUG: webhooks and their signatures can travel "
                "unencrypted and be read or altered on the way.",
                id="webhooks.W011",
            )
        )
    ports = settings.WEBHOOKS_ALLOWED_PORTS
    if not isinstance(ports, list | tuple | set | frozenset) or not all(
        isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535 for port in ports
    ):
        errors.append(Error("WEBHOOKS_ALLOWED_PORTS must be a list of port numbers (1-65535).", id="webhooks.E012"))
    bundle = settings.WEBHOOKS_CA_BUNDLE
    if bundle and not os.path.exists(bundle):
        errors.append(Error(f"WEBHOOKS_CA_BUNDLE names {bundle!r}, which does not exist.", id="webhooks.E013"))
    return errors
