"""System checks: refuse dangerous or broken settings at start-up, not at 3 a.m. in a worker."""

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .retry_policy import parse_schedule


@register()
def check_webhook_settings(app_configs, **kwargs):
    errors = []
    if settings.WEBHOOKS_RETRY_SCHEDULE:
        try:
            parse_schedule(settings.WEBHOOKS_RETRY_SCHEDULE)
        except ImproperlyConfigured as exc:
            errors.append(Error(str(exc), id="webhooks.E001"))
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
