"""Builders for the operator console tests: staff users with given permissions, and deliveries
in a given state written straight to the database (the state the pipeline would leave)."""

from datetime import datetime, timedelta

from django.contrib.auth.models import Permission, User
from django.utils import timezone

from deliveries.models import AttemptTrigger, Delivery, DeliveryAttempt, DeliveryStatus, Event, OrderingKey
from endpoints.models import Endpoint

# Everything an operator does, and the view permissions to see the screens.
OPERATOR_PERMISSIONS = (
    "endpoints.view_endpoint",
    "endpoints.change_endpoint",
    "endpoints.add_endpoint",
    "endpoints.rotate_secret",
    "endpoints.enable_disable_endpoint",
    "endpoints.send_test_event",
    "deliveries.view_event",
    "deliveries.view_delivery",
    "deliveries.retry_delivery",
    "deliveries.replay_delivery",
    "deliveries.cancel_delivery",
)
VIEW_PERMISSIONS = ("endpoints.view_endpoint", "deliveries.view_event", "deliveries.view_delivery")
PASSWORD = "correct horse battery staple"


def make_staff(username: str, permissions: tuple[str, ...] = OPERATOR_PERMISSIONS) -> User:
    """An active staff user (not a superuser) holding exactly `permissions` ("app.codename")."""
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def make_delivery(
    endpoint: Endpoint,
    status: str = DeliveryStatus.FAILED,
    *,
    attempts: int = 1,
    event_type: str = "order.paid",
    payload: dict | None = None,
    idempotency_key: str | None = None,
    finished_at: datetime | None = None,
    response_status: int = 400,
) -> Delivery:
    """A delivery of a new event, after `attempts` attempts answered `response_status` (the
    last one 200 if it succeeded), last updated at `finished_at` (default now)."""
    now = timezone.now()
    finished_at = finished_at or now
    event = Event.objects.create(
        type=event_type,
        tenant=endpoint.tenant,
        payload=payload if payload is not None else {"order": 1},
        idempotency_key=idempotency_key,
        fanned_out_at=now,
    )
    delivery = Delivery.objects.create(
        event=event,
        endpoint=endpoint,
        status=status,
        attempt_count=attempts,
        next_attempt_at=now if status == DeliveryStatus.PENDING else None,
        last_status_code=200 if status == DeliveryStatus.SUCCEEDED else response_status,
        last_error="" if status == DeliveryStatus.SUCCEEDED else f"HTTP {response_status}",
    )
    for number in range(1, attempts + 1):
        ok = status == DeliveryStatus.SUCCEEDED and number == attempts
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            trigger=AttemptTrigger.AUTOMATIC,
            started_at=finished_at - timedelta(seconds=attempts - number),
            duration_ms=12,
            request_headers={"Content-Type": "application/json", "webhook-signature": "[redacted]"},
            response_status=200 if ok else response_status,
            response_headers={"Content-Type": "text/plain"},
            response_body="ok" if ok else "bad request",
            outcome="succeeded" if ok else ("failed" if number == attempts else "retry"),
        )
    Delivery.objects.filter(pk=delivery.pk).update(updated_at=finished_at)  # auto_now applies on save()
    delivery.refresh_from_db()
    return delivery


def waiting_fields(waiting: str, now: datetime | None = None) -> dict:
    """The scheduling fields of a pending delivery in one `deliveries.backlog.Waiting` state, as
    deliveries.scheduling leaves them."""
    now = now or timezone.now()
    return {
        "due": {"next_attempt_at": now - timedelta(seconds=1)},
        "sending": {"next_attempt_at": now - timedelta(seconds=1), "locked_until": now + timedelta(minutes=1)},
        "retry": {"next_attempt_at": now + timedelta(minutes=5)},
        "rate_limit": {"next_attempt_at": now + timedelta(seconds=10), "parked_reason": "rate_limit"},
        "unrecorded": {"next_attempt_at": None, "parked_reason": ""},
    }.get(waiting, {"next_attempt_at": None, "parked_reason": waiting})


def make_waiting(endpoint: Endpoint, waiting: str, **fields) -> Delivery:
    """A pending delivery (one failed attempt behind it) waiting in state `waiting`; `fields`
    overrides (e.g. ordering_key, sequence)."""
    delivery = make_delivery(endpoint, DeliveryStatus.PENDING, response_status=500)
    Delivery.objects.filter(pk=delivery.pk).update(**{**waiting_fields(waiting), **fields})
    delivery.refresh_from_db()
    return delivery


def make_chain(endpoint: Endpoint, key: str, length: int, head_waiting: str = "retry") -> list[Delivery]:
    """`length` deliveries of one ordering key in sequence: the first (the head) waiting in
    `head_waiting`, the others parked behind it, as deliveries.ordering leaves them."""
    OrderingKey.objects.create(endpoint=endpoint, key=key, last_sequence=length)
    return [
        make_waiting(endpoint, head_waiting if n == 1 else "ordering", ordering_key=key, sequence=n)
        for n in range(1, length + 1)
    ]
