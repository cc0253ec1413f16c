"""Prometheus metrics: the sender's counters, the database gauges, /metrics and the worker's
own metrics server, on the real database and over real HTTP (loopback only)."""

import functools
import socket
from datetime import timedelta

import pytest
import requests
from celery.signals import worker_ready
from django.utils import timezone
from prometheus_client import REGISTRY

from deliveries import metrics, publish
from deliveries.models import Delivery, DeliveryStatus, Event
from endpoints.models import Endpoint
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_endpoint(path: str = "/hook") -> Endpoint:
    return Endpoint.objects.create(url=f"http://127.0.0.1:9{path}")


def make_delivery(endpoint: Endpoint, next_attempt_at, status: str = DeliveryStatus.PENDING) -> Delivery:
    event = Event.objects.create(type="order.paid", payload={"order": 1})
    return Delivery.objects.create(event=event, endpoint=endpoint, status=status, next_attempt_at=next_attempt_at)


def stop(server, thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# --- what the sender records ----------------------------------------------------------------


def test_observe_attempt_counts_the_outcome_and_times_the_request():
    retries, others = (
        sample("webhook_attempts_total", outcome="retry"),
        sample("webhook_attempts_total", outcome="gone"),
    )
    count = sample("webhook_attempt_duration_seconds_count")
    total = sample("webhook_attempt_duration_seconds_sum")
    under_250ms = sample("webhook_attempt_duration_seconds_bucket", le="0.25")
    under_100ms = sample("webhook_attempt_duration_seconds_bucket", le="0.1")

    metrics.observe_attempt("retry", 0.2, lag_seconds=None)

    assert sample("webhook_attempts_total", outcome="retry") == retries + 1
    assert sample("webhook_attempts_total", outcome="gone") == others
    assert sample("webhook_attempt_duration_seconds_count") == count + 1
    assert sample("webhook_attempt_duration_seconds_sum") == pytest.approx(total + 0.2)
    assert sample("webhook_attempt_duration_seconds_bucket", le="0.25") == under_250ms + 1
    assert sample("webhook_attempt_duration_seconds_bucket", le="0.1") == under_100ms


def test_observe_attempt_records_lag_when_given():
    lags = sample("webhook_delivery_lag_seconds_count")
    lag_sum = sample("webhook_delivery_lag_seconds_sum")
    under_15s = sample("webhook_delivery_lag_seconds_bucket", le="15.0")
    under_10s = sample("webhook_delivery_lag_seconds_bucket", le="10.0")

    metrics.observe_attempt("succeeded", 0.01, lag_seconds=12.5)
    metrics.observe_attempt("succeeded", 0.01, lag_seconds=None)

    assert sample("webhook_delivery_lag_seconds_count") == lags + 1
    assert sample("webhook_delivery_lag_seconds_sum") == pytest.approx(lag_sum + 12.5)
    assert sample("webhook_delivery_lag_seconds_bucket", le="15.0") == under_15s + 1
    assert sample("webhook_delivery_lag_seconds_bucket", le="10.0") == under_10s


def test_a_send_starting_before_its_due_time_counts_as_no_lag():
    on_time = sample("webhook_delivery_lag_seconds_bucket", le="0.1")
    lag_sum = sample("webhook_delivery_lag_seconds_sum")

    metrics.observe_attempt("succeeded", 0.01, lag_seconds=-0.5)

    assert sample("webhook_delivery_lag_seconds_bucket", le="0.1") == on_time + 1
    assert sample("webhook_delivery_lag_seconds_sum") == pytest.approx(lag_sum)


def test_every_outcome_series_exists_before_its_first_attempt():
    for outcome in ("succeeded", "retry", "failed", "gone"):
        assert REGISTRY.get_sample_value("webhook_attempts_total", {"outcome": outcome}) is not None


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="unknown attempt outcome"):
        metrics.observe_attempt("timeout", 1.0, None)


def test_observe_published_counts_events():
    published = sample("webhook_events_published_total")

    metrics.observe_published()
    metrics.observe_published(count=3)

    assert sample("webhook_events_published_total") == published + 4


# --- what the database says at scrape time --------------------------------------------------


def test_backlog_and_oldest_due_age_come_from_pending_deliveries():
    # Given two overdue deliveries (120 s and 30 s), one scheduled later, one parked, and a
    # succeeded one that was due long ago
    now = timezone.now()
    endpoint = make_endpoint()
    make_delivery(endpoint, now - timedelta(seconds=120))
    make_delivery(endpoint, now - timedelta(seconds=30))
    make_delivery(endpoint, now + timedelta(seconds=300))
    make_delivery(endpoint, None)
    make_delivery(endpoint, now - timedelta(hours=5), status=DeliveryStatus.SUCCEEDED)

    # When Prometheus scrapes, then every pending one is backlog, and the oldest due one sets the age
    assert sample("webhook_pending_deliveries") == 4
    assert 120 <= sample("webhook_oldest_pending_age_seconds") < 180


def test_nothing_pending_means_zero_backlog_and_zero_age():
    make_delivery(make_endpoint(), timezone.now() + timedelta(seconds=60))  # scheduled, not due

    assert REGISTRY.get_sample_value("webhook_oldest_pending_age_seconds") == 0
    Delivery.objects.all().delete()
    assert REGISTRY.get_sample_value("webhook_pending_deliveries") == 0


def test_endpoints_are_counted_by_state():
    # Given two active endpoints, one disabled, one paused by its breaker, one whose pause is over
    make_endpoint("/a")
    make_endpoint("/b")
    Endpoint.objects.filter(pk=make_endpoint("/disabled").pk).update(is_active=False)
    now = timezone.now()
    Endpoint.objects.filter(pk=make_endpoint("/paused").pk).update(paused_until=now + timedelta(minutes=1))
    Endpoint.objects.filter(pk=make_endpoint("/probe-due").pk).update(paused_until=now - timedelta(seconds=1))

    assert sample("webhook_endpoints", state="active") == 3
    assert sample("webhook_endpoints", state="disabled") == 1
    assert sample("webhook_endpoints", state="paused") == 1


def test_database_collector_is_registered_once():
    metrics.register_database_collector()  # a second registration is ignored, not an error

    names = [family.name for family in REGISTRY.collect()]
    assert names.count("webhook_pending_deliveries") == 1


# --- where Prometheus reads them ------------------------------------------------------------


def test_metrics_view_serves_prometheus_text(client):
    make_delivery(make_endpoint(), timezone.now() - timedelta(seconds=5))

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.content.decode()
    for line_start in (
        'webhook_attempts_total{outcome="succeeded"}',
        "webhook_attempt_duration_seconds_bucket",
        "webhook_delivery_lag_seconds_bucket",
        "webhook_events_published_total",
        "webhook_pending_deliveries 1.0",
        "webhook_oldest_pending_age_seconds",
        'webhook_endpoints{state="active"} 1.0',
    ):
        assert f"\n{line_start}" in text


def test_metrics_view_answers_get_only(client):
    assert client.post("/metrics").status_code == 405


def test_worker_metrics_server_serves_this_process_metrics_over_http():
    server, thread = metrics.start_worker_metrics_server(port=0, addr="127.0.0.1")
    try:
        metrics.observe_attempt("failed", 0.05, 1.0)

        response = requests.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
    finally:
        stop(server, thread)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert 'webhook_attempts_total{outcome="failed"}' in response.text
    assert "webhook_delivery_lag_seconds_count" in response.text
    assert "process_cpu_seconds_total" in response.text or "python_info" in response.text
    # The installation-wide gauges are served once, by the web process, not by every worker.
    assert "webhook_pending_deliveries" not in response.text


def test_worker_metrics_server_is_off_without_a_port(settings):
    settings.WEBHOOKS_WORKER_METRICS_PORT = 0

    assert metrics.start_worker_metrics_server() is None


@pytest.fixture
def worker_signals(monkeypatch):
    """connect_worker_signals(), bound to loopback for the test, and undone afterwards."""
    monkeypatch.setattr(
        metrics, "start_worker_metrics_server", functools.partial(metrics.start_worker_metrics_server, addr="127.0.0.1")
    )
    monkeypatch.setattr(metrics, "_worker_server", None)
    metrics.connect_worker_signals()
    metrics.connect_worker_signals()  # twice, as a reloaded app would: still one handler
    yield
    worker_ready.disconnect(dispatch_uid="deliveries.metrics.worker_ready")
    if metrics._worker_server is not None:
        stop(*metrics._worker_server)


def test_worker_ready_starts_the_server_on_the_configured_port_once(settings, worker_signals):
    settings.WEBHOOKS_WORKER_METRICS_PORT = port = free_port()

    worker_ready.send(sender=None)
    first = metrics._worker_server
    worker_ready.send(sender=None)  # a second signal must not try to bind the port again

    assert first is not None and metrics._worker_server is first
    assert first[0].server_port == port
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert "webhook_attempts_total" in response.text


def test_worker_ready_without_a_port_serves_nothing(settings, worker_signals):
    settings.WEBHOOKS_WORKER_METRICS_PORT = 0

    worker_ready.send(sender=None)

    assert metrics._worker_server is None


@pytest.mark.django_db(transaction=True)
def test_a_real_delivery_is_counted_timed_and_lagged(celery_worker, receiver):
    before = sample("webhook_attempts_total", outcome="succeeded")
    timed_before = sample("webhook_attempt_duration_seconds_count")
    lag_before = sample("webhook_delivery_lag_seconds_count")
    Endpoint.objects.create(url=receiver.url("/hook"))

    event = publish("order.paid", {"n": 1})

    wait_until(lambda: Delivery.objects.filter(event=event, status=DeliveryStatus.SUCCEEDED).exists())
    assert sample("webhook_attempts_total", outcome="succeeded") == before + 1
    assert sample("webhook_attempt_duration_seconds_count") == timed_before + 1
    assert sample("webhook_delivery_lag_seconds_count") == lag_before + 1
