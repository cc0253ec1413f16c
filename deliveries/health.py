"""Endpoint health: success rates over sliding windows, alerts on change, auto-disable.

Run by beat every WEBHOOKS_HEALTH_INTERVAL seconds (`deliveries.health_check`). For each window
in WEBHOOKS_HEALTH_WINDOWS (default 15 min and 24 h) an endpoint with at least
WEBHOOKS_HEALTH_MIN_ATTEMPTS attempts whose success rate is below WEBHOOKS_HEALTH_THRESHOLD
(default 95 %) is reported unhealthy: the `endpoint_unhealthy` signal, a structured log line
and (WEBHOOKS_HEALTH_MAIL_ADMINS) `mail_admins`. It is reported once, until it is back at or
above the threshold, which is reported once as `endpoint_recovered`. An endpoint that has
failed without a single success for WEBHOOKS_AUTO_DISABLE_AFTER is disabled.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ImproperlyConfigured
from django.core.mail import mail_admins
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from endpoints.app_settings import webhook_settings
from endpoints.models import Endpoint

from . import signals
from .models import DeliveryAttempt, EndpointHealth
from .retry_policy import Verdict

logger = logging.getLogger(__name__)


@dataclass
class HealthReport:
    unhealthy: list[tuple[int, int]] = field(default_factory=list)  # (endpoint id, window)
    recovered: list[tuple[int, int]] = field(default_factory=list)
    disabled: list[int] = field(default_factory=list)


def health_windows() -> list[int]:
    try:
        windows = [int(part) for part in webhook_settings.HEALTH_WINDOWS.split(",") if part.strip()]
    except ValueError:
        raise ImproperlyConfigured("WEBHOOKS_HEALTH_WINDOWS must be comma-separated whole seconds") from None
    if not windows or any(w <= 0 for w in windows):
        raise ImproperlyConfigured("WEBHOOKS_HEALTH_WINDOWS must list positive numbers of seconds")
    return windows


def attempt_counts(window_seconds: int, now: datetime) -> dict[int, tuple[int, int]]:
    """{endpoint id: (attempts, successes)} over the last `window_seconds`."""
    rows = (
        DeliveryAttempt.objects.filter(started_at__gte=now - timedelta(seconds=window_seconds))
        .values("delivery__endpoint_id")
        .annotate(total=Count("id"), ok=Count("id", filter=Q(outcome=Verdict.SUCCEEDED)))
    )
    return {row["delivery__endpoint_id"]: (row["total"], row["ok"]) for row in rows}


def _alert(endpoint: Endpoint, window: int, rate: float, attempts: int, unhealthy: bool) -> None:
    state = "unhealthy" if unhealthy else "recovered"
    message = (
        f"webhook endpoint {state} endpoint={endpoint.pk} url={endpoint.url} window_s={window} "
        f"success_rate={rate:.3f} attempts={attempts} threshold={webhook_settings.HEALTH_THRESHOLD}"
    )
    (logger.warning if unhealthy else logger.info)(message)
    signal = signals.endpoint_unhealthy if unhealthy else signals.endpoint_recovered
    kwargs = {"endpoint": endpoint, "window_seconds": window, "success_rate": rate, "attempts": attempts}

    def send() -> None:
        signal.send(sender=Endpoint, **kwargs)
        if webhook_settings.HEALTH_MAIL_ADMINS:
            mail_admins(f"Webhook endpoint {state}: {endpoint.url}", message, fail_silently=True)

    transaction.on_commit(send)


def check_windows(now: datetime, report: HealthReport) -> None:
    threshold = webhook_settings.HEALTH_THRESHOLD
    minimum = webhook_settings.HEALTH_MIN_ATTEMPTS
    for window in health_windows():
        counts = attempt_counts(window, now)
        states = {h.endpoint_id: h for h in EndpointHealth.objects.filter(window_seconds=window)}
        for endpoint_id, (total, ok) in counts.items():
            if total < minimum:
                continue  # too few attempts to judge; the verdict stands
            rate = ok / total
            unhealthy = rate < threshold
            state = states.get(endpoint_id)
            if state is None and not unhealthy:
                continue  # healthy and never reported: nothing to remember
            if state is not None and state.unhealthy == unhealthy:
                EndpointHealth.objects.filter(pk=state.pk).update(success_rate=rate, attempts=total, checked_at=now)
                continue
            with transaction.atomic():
                EndpointHealth.objects.update_or_create(
                    endpoint_id=endpoint_id,
                    window_seconds=window,
                    defaults={
                        "unhealthy": unhealthy,
                        "success_rate": rate,
                        "attempts": total,
                        "changed_at": now,
                        "checked_at": now,
                    },
                )
                endpoint = Endpoint.objects.get(pk=endpoint_id)
                _alert(endpoint, window, rate, total, unhealthy)
            (report.unhealthy if unhealthy else report.recovered).append((endpoint_id, window))


def disable_long_failing(now: datetime, report: HealthReport) -> None:
    cutoff = now - timedelta(seconds=webhook_settings.AUTO_DISABLE_AFTER)
    for endpoint in Endpoint.objects.filter(is_active=True, failing_since__lt=cutoff):
        with transaction.atomic():
            endpoint.disable(f"failing without a success since {endpoint.failing_since:%Y-%m-%d %H:%M:%S}Z")
        logger.warning(
            "webhook endpoint disabled endpoint=%s url=%s reason=%s",
            endpoint.pk,
            endpoint.url,
            endpoint.disabled_reason,
        )
        report.disabled.append(endpoint.pk)


def check_health(now: datetime | None = None) -> HealthReport:
    """One health pass: alerts on changed verdicts, then auto-disable."""
    now = now or timezone.now()
    report = HealthReport()
    check_windows(now, report)
    disable_long_failing(now, report)
    return report
