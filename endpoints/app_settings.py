"""The settings the apps read, each with its default: a host that sets none of them works.

    from endpoints.app_settings import webhook_settings
    webhook_settings.REQUEST_TIMEOUT     # settings.WEBHOOKS_REQUEST_TIMEOUT, or 30.0

Every value is read from `django.conf.settings` (as `WEBHOOKS_<NAME>`) at each access, so
`override_settings` and the test `settings` fixture apply at once; unset, the default below
applies. The host's settings module sets them as plain Python values (the reference project,
webhooks_project/settings.py, maps environment variables onto them). Invalid values and broken
invariants between them are reported by the system checks in deliveries/checks.py, with ids,
when any management command, worker or server starts. Each setting is documented in the README
("Settings").
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings

from . import __version__

__all__ = ["DEFAULTS", "PREFIX", "webhook_settings"]

PREFIX = "WEBHOOKS_"


def _debug() -> bool:
    return bool(settings.DEBUG)


# A callable default is called at each read (used for "on while DEBUG is").
DEFAULTS: dict[str, Any] = {
    # Transport (README "How delivery works", "Security").
    "REQUEST_TIMEOUT": 30.0,  # total deadline of one request, seconds
    "CONNECT_TIMEOUT": 5.0,
    "ALLOW_PRIVATE_NETWORKS": _debug,  # loopback / private targets: only while DEBUG by default
    "ALLOW_HTTP": _debug,  # plain http endpoints: only while DEBUG by default
    "ALLOWED_PORTS": [],  # empty: any port
    "CA_BUNDLE": "",  # empty: certifi's bundle
    "SECRET_KEYS": [],  # Fernet keys (endpoints/secret_box.py); empty: DEBUG-only development key
    "USER_AGENT": f"django-webhook-sender/{__version__}",
    "MAX_RESPONSE_BYTES": 20 * 1024,
    # Retries (deliveries/retry_policy.py).
    "RETRY_SCHEDULE": "",  # comma-separated seconds between attempts; empty: the default schedule
    "RETRY_JITTER": 0.2,
    "RETRY_ALL_NON_2XX": False,
    "MAX_RETRY_AFTER": 12 * 3600.0,
    "MAX_COUNTDOWN": 60.0,
    # Publishing and the pipeline (README "Performance").
    "MAX_PAYLOAD_BYTES": 256 * 1024,
    "SWEEP_INTERVAL": 15.0,
    "SWEEP_BATCH_SIZE": 500,
    "REQUEUE_AFTER": 120.0,
    "FANOUT_BATCH_SIZE": 100,
    "SEND_BATCH_SIZE": 20,
    "SEND_BATCH_SECONDS": 2.5,
    "FANOUT_SENDS_FIRST_BATCH": True,
    "CLAIM_MARGIN": 60.0,
    # Health, circuit breaker, auto-disable.
    "HEALTH_WINDOWS": "900,86400",
    "HEALTH_THRESHOLD": 0.95,
    "HEALTH_MIN_ATTEMPTS": 10,
    "HEALTH_INTERVAL": 60.0,
    "HEALTH_MAIL_ADMINS": True,
    "BREAKER_THRESHOLD": 5,
    "BREAKER_COOLDOWN": 60.0,
    "AUTO_DISABLE_AFTER": 5 * 86400.0,
    # Retention.
    "RETENTION_SUCCEEDED_DAYS": 30.0,
    "RETENTION_FAILED_DAYS": 90.0,
    "RETENTION_BATCH_SIZE": 1000,
    "RETENTION_SCHEDULE": None,  # a Celery schedule (crontab, seconds); None: daily at 03:17 UTC
    # Endpoint verification (deliveries/verification.py, README "Endpoint verification").
    "VERIFY_API_ENDPOINTS": True,  # endpoints created through the customers' API must answer the handshake
    "VERIFICATION_ORIGIN": "",  # WebHook-Request-Origin; empty: the first plain name in ALLOWED_HOSTS
    "VERIFICATION_SCHEDULE": "60,300,900,3600,3600,3600,86400",  # seconds between handshakes; the last repeats
    # Host integration.
    "MODEL_HOOKS": {},  # "app_label.Model" -> hook (README "Model hooks")
    "EVENT_TYPES": {},  # event type -> {"description", "schema"}; empty accepts every type
    # The customers' API (deliveries.api, README "API for your customers"): the dotted path of
    # the host's function (request) -> tenant string, or None to refuse; unset, the API refuses all.
    "API_TENANT": None,
    # True: each state-changing API route also needs the Django permission admin requires for the
    # same action (deliveries/permissions.py). False: the tenant function alone decides.
    "API_CHECK_PERMISSIONS": False,
    # Metrics: each worker process serves Prometheus metrics on this port when set.
    "WORKER_METRICS_PORT": 0,
}


class WebhookSettings:
    """`WEBHOOKS_*` settings by their short name, with the defaults above."""

    def __getattr__(self, name: str) -> Any:
        try:
            default = DEFAULTS[name]
        except KeyError:
            raise AttributeError(f"no webhook setting {name!r} (known: {', '.join(sorted(DEFAULTS))})") from None
        value = getattr(settings, PREFIX + name, _UNSET)
        if value is _UNSET:
            return default() if isinstance(default, Callable) else default
        return value

    def __dir__(self) -> list[str]:
        return sorted(DEFAULTS)


_UNSET = object()
webhook_settings = WebhookSettings()
