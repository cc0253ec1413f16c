"""Endpoint verification: the CloudEvents HTTP webhook "abuse protection" handshake.

Before an endpoint under verification receives anything, the sender asks its URL whether it
wants our webhooks: `OPTIONS <url>` with `WebHook-Request-Origin: <our origin>`. The receiver
grants it by answering 200 (or 204) with `WebHook-Allowed-Origin: <our origin>` or `*`
(CloudEvents http-webhook.md, section 4). Anything else (another status, no or another origin,
no answer, an address the SSRF guard refuses) leaves the endpoint unverified: its deliveries
stay parked (pending, `next_attempt_at` null, no attempt spent, as for a disabled endpoint) and
the handshake runs again after WEBHOOKS_VERIFICATION_SCHEDULE (1 min, 5 min, 15 min, then
hourly, then daily by default). A grant makes every parked delivery due and enqueues it.

The request goes through the transport (deliveries/transport.py): the policy check, the SSRF
guard, the deadlines and no redirects apply as to every webhook. Waits up to
WEBHOOKS_MAX_COUNTDOWN go back to the broker as a countdown; longer ones wait in
`verification_due_at` for the sweep (a long countdown would be redelivered by Redis).
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from endpoints.app_settings import webhook_settings
from endpoints.models import Endpoint, VerificationStatus

from . import transport
from .models import Delivery
from .scheduling import lease_seconds, unpark

__all__ = [
    "HandshakeResult",
    "due_handshakes",
    "handshake",
    "release_verified",
    "schedule",
    "verification_origin",
    "verify_endpoint",
    "waive_verification",
]

logger = logging.getLogger(__name__)

REQUEST_ORIGIN = "WebHook-Request-Origin"
ALLOWED_ORIGIN = "WebHook-Allowed-Origin"
GRANTING_STATUSES = frozenset({200, 204})
# When no host name can be derived from ALLOWED_HOSTS: a name that is plainly nobody's.
FALLBACK_ORIGIN = "localhost"


def verification_origin() -> str:
    """What we send as WebHook-Request-Origin: WEBHOOKS_VERIFICATION_ORIGIN, else the first
    ALLOWED_HOSTS entry that is a plain host name (no wildcard), else "localhost"."""
    if webhook_settings.VERIFICATION_ORIGIN:
        return webhook_settings.VERIFICATION_ORIGIN
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host and not host.startswith("."):
            return host
    return FALLBACK_ORIGIN


def schedule() -> tuple[float, ...]:
    """WEBHOOKS_VERIFICATION_SCHEDULE parsed: seconds before each next handshake (the last repeats)."""
    value = webhook_settings.VERIFICATION_SCHEDULE
    try:
        waits = tuple(float(part) for part in value.split(",") if part.strip())
    except (AttributeError, ValueError):
        waits = ()
    if not waits or any(not 0 < wait < float("inf") for wait in waits):
        raise ImproperlyConfigured(
            f"WEBHOOKS_VERIFICATION_SCHEDULE must be comma-separated positive seconds such as '60,300,3600', "
            f"not {value!r}"
        )
    return waits


def next_wait(failed_attempts: int) -> float:
    """Seconds to wait after the `failed_attempts`-th failed handshake."""
    waits = schedule()
    return waits[min(failed_attempts, len(waits)) - 1]


@dataclass
class HandshakeResult:
    """One handshake: granted or not, why not, and (when it failed) the next one's time."""

    granted: bool
    reason: str = ""
    retry_at: datetime | None = None


def handshake(endpoint: Endpoint) -> HandshakeResult:
    """Send the OPTIONS request to the endpoint's URL and judge the answer (no database writes)."""
    origin = verification_origin()
    # The endpoint's custom headers first (a receiver behind a gateway may need them), ours after.
    headers = {**endpoint.request_headers(), "User-Agent": webhook_settings.USER_AGENT, REQUEST_ORIGIN: origin}
    client_certificate = getattr(endpoint, "client_certificate", None)
    sent = transport.request("OPTIONS", endpoint.url, headers, client_certificate=client_certificate)
    if sent.error is not None:
        return HandshakeResult(False, f"{sent.error.error_class}: {sent.error.message}")
    response = sent.response
    allowed = {k.lower(): v for k, v in response.headers.items()}.get(ALLOWED_ORIGIN.lower(), "").strip()
    if response.status not in GRANTING_STATUSES:
        return HandshakeResult(False, f"HTTP {response.status} to OPTIONS; the handshake needs 200 or 204")
    if allowed != "*" and allowed.lower() != origin.lower():
        shown = f"{ALLOWED_ORIGIN}: {allowed!r}" if allowed else f"no {ALLOWED_ORIGIN} header"
        return HandshakeResult(False, f"HTTP {response.status} with {shown}; the handshake needs {origin!r} or '*'")
    return HandshakeResult(True)


def _claim(endpoint_id: int, now: datetime, force: bool) -> datetime | None:
    """Take the handshake of an unverified endpoint that is due (any endpoint when `force`):
    `verification_due_at` becomes a lease, so a second runner finds nothing due. Returns it."""
    lease = now + timedelta(seconds=lease_seconds())
    candidates = Endpoint.objects.filter(pk=endpoint_id)
    if not force:
        candidates = candidates.filter(verification_status=VerificationStatus.UNVERIFIED, verification_due_at__lte=now)
    return lease if candidates.update(verification_due_at=lease) else None


def verify_endpoint(endpoint_id: int, force: bool = False) -> HandshakeResult | None:
    """Run the handshake of an endpoint and record it; None if it was not due (or gone).

    Granted: the endpoint is verified and its parked deliveries are made due and enqueued.
    Refused: an unverified endpoint records why and when the next handshake is due; an endpoint
    not under verification (an operator's check, `force`) keeps its state.
    """
    now = timezone.now()
    lease = _claim(endpoint_id, now, force)
    if lease is None:
        return None
    endpoint = Endpoint.objects.select_related("client_certificate").filter(pk=endpoint_id).first()
    if endpoint is None:
        return None
    result = handshake(endpoint)
    done = timezone.now()
    mine = Endpoint.objects.filter(pk=endpoint_id, verification_due_at=lease)
    if result.granted:
        # An operator's check of an endpoint that needs no handshake records it, nothing more.
        required = endpoint.verification_status != VerificationStatus.NOT_REQUIRED
        with transaction.atomic():
            mine.update(
                verification_status=VerificationStatus.VERIFIED if required else VerificationStatus.NOT_REQUIRED,
                verified_at=done,
                verification_due_at=None,
                verification_attempts=endpoint.verification_attempts + 1,
                verification_error="",
                updated_at=done,
            )
            transaction.on_commit(lambda: release_verified(endpoint_id))
        logger.info("endpoint %s verified", endpoint_id)
        return result
    if endpoint.verification_status != VerificationStatus.UNVERIFIED:
        mine.update(verification_due_at=None)  # an operator's check of an endpoint that sends anyway
        return result
    attempts = endpoint.verification_attempts + 1
    result.retry_at = done + timedelta(seconds=next_wait(attempts))
    mine.update(
        verification_due_at=result.retry_at,
        verification_attempts=attempts,
        verification_error=result.reason[:500],
        updated_at=done,
    )
    logger.info("endpoint %s not verified (%s); next handshake at %s", endpoint_id, result.reason, result.retry_at)
    return result


def waive_verification(endpoint: Endpoint) -> bool:
    """Let an unverified endpoint receive without the handshake (an operator's decision);
    its parked deliveries become due. Returns whether it was unverified."""
    now = timezone.now()
    waived = Endpoint.objects.filter(pk=endpoint.pk, verification_status=VerificationStatus.UNVERIFIED).update(
        verification_status=VerificationStatus.WAIVED, verification_due_at=None, updated_at=now
    )
    if waived:
        endpoint.verification_status, endpoint.verification_due_at = VerificationStatus.WAIVED, None
        transaction.on_commit(lambda: release_verified(endpoint.pk))
    return bool(waived)


def release_verified(endpoint_id: int) -> int:
    """Make the deliveries parked while the endpoint was unverified due now, and enqueue them
    (a failed publish leaves them to the sweep). Returns how many."""
    from .sweeper import take_due
    from .tasks import enqueue_due

    now = timezone.now()
    unpark(Delivery.objects.filter(endpoint_id=endpoint_id), now)
    return enqueue_due(take_due(webhook_settings.SWEEP_BATCH_SIZE, endpoint_id=endpoint_id))


def due_handshakes(now: datetime | None = None) -> list[int]:
    """Ids of unverified endpoints whose handshake is due (for the sweep to enqueue)."""
    now = now or timezone.now()
    return list(
        Endpoint.objects.filter(
            verification_status=VerificationStatus.UNVERIFIED, verification_due_at__lte=now, is_active=True
        ).values_list("pk", flat=True)
    )
