"""System checks: refuse dangerous or broken settings at start-up, not at 3 a.m. in a worker."""

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

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
