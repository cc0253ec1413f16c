"""Circuit breaker, health alerts and auto-disable, on PostgreSQL, Redis, a real worker and a
real receiver."""

import threading
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from deliveries import publish
from deliveries.health import check_health
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.sending import send_delivery
from deliveries.signals import endpoint_recovered, endpoint_unhealthy
from deliveries.tasks import sweep_due_task
from endpoints.models import Endpoint
from endpoints.signals import endpoint_disabled
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Sweeper:
    """Runs the sweep every `interval` seconds in a thread, as beat would."""

    def __init__(self, interval: float = 0.2) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        try:
            while not self._stop.wait(interval):
                sweep_due_task()
        finally:
            connection.close()

    def __enter__(self) -> "Sweeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def slow_ok(seconds: float):
    def answer(handler) -> None:
        time.sleep(seconds)
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    return answer


def test_breaker_pauses_a_failing_endpoint_leaves_others_alone_and_probes_before_resuming(
    celery_worker, receiver, settings
):
    settings.WEBHOOKS_BREAKER_THRESHOLD = 3
    settings.WEBHOOKS_BREAKER_COOLDOWN = 3
    settings.WEBHOOKS_RETRY_SCHEDULE = ",".join(["0.2"] * 30)
    settings.WEBHOOKS_RETRY_JITTER = 0
    receiver.script("/bad", [(500, {}, b"down")])
    bad = Endpoint.objects.create(url=receiver.url("/bad"))
    Endpoint.objects.create(url=receiver.url("/good"))

    with Sweeper():
        # Given six events to a failing and a healthy endpoint
        events = [publish("order.paid", {"n": n}) for n in range(6)]

        # Then the failing endpoint's breaker opens
        wait_until(lambda: Endpoint.objects.get(pk=bad.pk).paused_until is not None)
        # ... the healthy endpoint gets everything, undisturbed
        wait_until(lambda: Delivery.objects.filter(endpoint__url__endswith="/good", status="succeeded").count() == 6)
        # ... and while the breaker is open, nothing more goes to the failing one; its
        # deliveries stay pending, no attempt is spent and nothing fails
        # (sends that passed the gate before it opened finish: none of its deliveries is claimed)
        wait_until(lambda: not Delivery.objects.filter(endpoint=bad, locked_until__isnull=False).exists())
        during_pause = len(receiver.received("/bad"))
        time.sleep(0.8)
        assert len(receiver.received("/bad")) == during_pause
        bad_deliveries = Delivery.objects.filter(endpoint=bad)
        assert set(bad_deliveries.values_list("status", flat=True)) == {DeliveryStatus.PENDING}
        attempts_while_paused = DeliveryAttempt.objects.filter(delivery__endpoint=bad).count()
        assert attempts_while_paused == during_pause

        # When the receiver recovers (answering slowly, so a second request would overlap)
        receiver.script("/bad", [slow_ok(0.5)])

        # Then after the cool-down one probe goes out alone, and its success resumes the rest
        wait_until(lambda: bad_deliveries.filter(status=DeliveryStatus.SUCCEEDED).count() == 6, timeout=20)

    after = receiver.received("/bad")[during_pause:]
    assert len(after) == 6
    probe, rest = after[0], after[1:]
    assert all(r.received_at >= probe.received_at + 0.45 for r in rest)
    endpoint = Endpoint.objects.get(pk=bad.pk)
    assert (endpoint.consecutive_failures, endpoint.paused_until, endpoint.failing_since) == (0, None, None)
    assert not Delivery.objects.filter(status=DeliveryStatus.FAILED).exists()
    assert {e.pk for e in events} == set(Event.objects.values_list("pk", flat=True))


def make_attempts(endpoint: Endpoint, ok: int, failed: int, age: timedelta = timedelta(0)) -> None:
    event = Event.objects.create(type="order.paid", payload={}, fanned_out_at=timezone.now())
    delivery = Delivery.objects.create(event=event, endpoint=endpoint)
    started = timezone.now() - age
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(
            delivery=delivery,
            number=n + 1,
            started_at=started,
            duration_ms=5,
            response_status=200 if n < ok else 500,
            outcome="succeeded" if n < ok else "retry",
        )
        for n in range(ok + failed)
    )


@pytest.fixture
def alerts():
    received = []

    def on_unhealthy(sender, **kwargs):
        received.append(("unhealthy", kwargs))

    def on_recovered(sender, **kwargs):
        received.append(("recovered", kwargs))

    endpoint_unhealthy.connect(on_unhealthy)
    endpoint_recovered.connect(on_recovered)
    yield received
    endpoint_unhealthy.disconnect(on_unhealthy)
    endpoint_recovered.disconnect(on_recovered)


def test_health_alert_fires_once_below_threshold_and_once_on_recovery(alerts, settings):
    settings.WEBHOOKS_HEALTH_WINDOWS = "60"
    settings.WEBHOOKS_HEALTH_MIN_ATTEMPTS = 5
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    make_attempts(endpoint, ok=100, failed=0, age=timedelta(minutes=5))  # outside the window

    # Given 8 successes and 2 failures in the window: 80 %
    make_attempts(endpoint, ok=8, failed=2)
    check_health()
    check_health()  # a second pass does not repeat the alert

    assert [
        (kind, kw["endpoint"].pk, kw["window_seconds"], kw["success_rate"], kw["attempts"]) for kind, kw in alerts
    ] == [("unhealthy", endpoint.pk, 60, 0.8, 10)]
    assert len(mail.outbox) == 1
    assert "unhealthy" in mail.outbox[0].subject

    # When it succeeds again until the rate is back above 95 %
    make_attempts(endpoint, ok=190, failed=0)
    check_health()
    check_health()

    assert [kind for kind, _ in alerts] == ["unhealthy", "recovered"]
    assert alerts[1][1]["success_rate"] == pytest.approx(198 / 200)
    assert len(mail.outbox) == 2


def test_too_few_attempts_raise_no_alert(alerts, settings):
    settings.WEBHOOKS_HEALTH_MIN_ATTEMPTS = 10
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    make_attempts(endpoint, ok=0, failed=9)
    assert check_health().unhealthy == []
    assert alerts == []


def test_endpoint_failing_without_success_for_the_period_is_disabled_and_keeps_its_deliveries(settings):
    settings.WEBHOOKS_AUTO_DISABLE_AFTER = 5
    disabled = []

    def on_disabled(sender, endpoint, reason, **kwargs):
        disabled.append((endpoint.pk, reason))

    endpoint_disabled.connect(on_disabled)
    try:
        failing = Endpoint.objects.create(url="https://example.com/failing")
        recent = Endpoint.objects.create(url="https://example.com/recent")
        Endpoint.objects.filter(pk=failing.pk).update(failing_since=timezone.now() - timedelta(seconds=10))
        Endpoint.objects.filter(pk=recent.pk).update(failing_since=timezone.now() - timedelta(seconds=2))
        event = Event.objects.create(type="order.paid", payload={}, fanned_out_at=timezone.now())
        pending = Delivery.objects.create(event=event, endpoint=failing, next_attempt_at=timezone.now())

        report = check_health()
        check_health()
    finally:
        endpoint_disabled.disconnect(on_disabled)

    assert report.disabled == [failing.pk]
    failing.refresh_from_db()
    assert not failing.is_active
    assert failing.disabled_at is not None
    assert failing.disabled_reason.startswith("failing without a success since")
    assert [pk for pk, _ in disabled] == [failing.pk]
    assert Endpoint.objects.get(pk=recent.pk).is_active
    assert Delivery.objects.get(pk=pending.pk).status == DeliveryStatus.PENDING


def test_enabling_a_disabled_endpoint_sends_the_deliveries_it_kept(celery_worker, receiver):
    # Given a delivery due to an endpoint that was disabled meanwhile: the send parks it
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    event = Event.objects.create(type="order.paid", payload={"n": 1}, fanned_out_at=timezone.now())
    delivery = Delivery.objects.create(event=event, endpoint=endpoint, next_attempt_at=timezone.now())
    endpoint.disable("maintenance")
    assert send_delivery(delivery.pk) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at, delivery.attempt_count) == (DeliveryStatus.PENDING, None, 0)
    assert receiver.received() == []

    # When it is enabled again and the sweep runs
    Endpoint.objects.get(pk=endpoint.pk).enable()
    sweep_due_task()

    # Then the kept delivery is sent
    receiver.wait_for(1)
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)
