"""Prometheus metrics: what the sender did (per process) and what is waiting (from the database).

Two kinds of figures, exposed in two places:

- Per-process counters and histograms, updated as the code runs: attempts by outcome, their
  duration, how late each send started, events published. Workers serve them on their own
  port (`start_worker_metrics_server`); the web process serves them at `/metrics`.
- Database gauges (`DatabaseCollector`), computed at scrape time with a few aggregate
  queries: the backlog, the age of the oldest due delivery, endpoints by state. They describe
  the whole installation, so only the web `/metrics` serves them: every worker repeating them
  would multiply the queries and the series by the number of workers.
"""

import logging
from collections.abc import Iterator
from threading import Thread
from wsgiref.simple_server import WSGIServer

from django.db import DatabaseError
from django.db.models import Count, Q
from django.utils import timezone
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from endpoints.app_settings import webhook_settings
from endpoints.models import Endpoint

from .models import Delivery, DeliveryStatus

logger = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "retry", "failed", "gone")  # retry_policy.Verdict's values
ENDPOINT_STATES = ("active", "disabled", "paused")

# An attempt is bounded by the connect and read timeouts (5 s + 30 s by default); most
# healthy receivers answer in tens of milliseconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30)
# The sweep runs every 15 s by default, so a delivery it enqueues starts up to ~15 s late in
# normal operation; minutes to hours mean a backlog.
LAG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)

ATTEMPTS = Counter(
    "webhook_attempts",
    "Delivery attempts made by this process, by outcome (succeeded, retry, failed, gone).",
    ["outcome"],
    registry=None,
)
ATTEMPT_DURATION = Histogram(
    "webhook_attempt_duration_seconds",
    "Duration of the HTTP request of one delivery attempt.",
    buckets=DURATION_BUCKETS,
    registry=None,
)
DELIVERY_LAG = Histogram(
    "webhook_delivery_lag_seconds",
    "How late a send started: from the delivery's next_attempt_at to the start of the attempt.",
    buckets=LAG_BUCKETS,
    registry=None,
)
EVENTS_PUBLISHED = Counter(
    "webhook_events_published",
    "Events published (committed) by this process.",
    registry=None,
)
PROCESS_METRICS = (ATTEMPTS, ATTEMPT_DURATION, DELIVERY_LAG, EVENTS_PUBLISHED)

for _outcome in OUTCOMES:
    ATTEMPTS.labels(outcome=_outcome)  # every series exists from the start, so rate() sees the first one

# What a worker's own server exposes: this process's metrics, without the database gauges.
WORKER_REGISTRY = CollectorRegistry()
for _collector in (*PROCESS_METRICS, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    WORKER_REGISTRY.register(_collector)
for _collector in PROCESS_METRICS:
    REGISTRY.register(_collector)


def observe_attempt(outcome: str, duration_seconds: float, lag_seconds: float | None) -> None:
    """Record one delivery attempt: its outcome, how long the HTTP request took, and how late
    it started (None when lateness means nothing, e.g. an operator's manual retry)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown attempt outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    ATTEMPTS.labels(outcome=outcome).inc()
    ATTEMPT_DURATION.observe(max(0.0, duration_seconds))
    if lag_seconds is not None:
        # A send can start a moment before next_attempt_at when clocks differ; that is not lateness.
        DELIVERY_LAG.observe(max(0.0, lag_seconds))


def observe_published(count: int = 1) -> None:
    """Record `count` published events (call it once the event is committed)."""
    EVENTS_PUBLISHED.inc(count)


class DatabaseCollector(Collector):
    """Backlog and endpoint gauges, read from the database at scrape time.

    Three cheap queries: a count of pending deliveries, the earliest due `next_attempt_at`
    (the partial index `delivery_due` answers it), and one conditional count of endpoints.
    Endpoint states partition the endpoints: `disabled` (not is_active), `paused` (active, its
    circuit breaker holds it until `paused_until`), `active` (the rest).

    It runs in the thread that scrapes, on that thread's Django connection: serve it from a
    Django view (the request cycle closes the connection), not from a bare HTTP server thread.
    """

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Lets the registry learn the names without querying the database at registration.
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pending, oldest_age, endpoints = self._families()
        try:
            count, age = self._backlog()
            states = self._endpoint_states()
        except DatabaseError:
            # The process metrics are still worth a scrape; the gauges go missing, which
            # `absent()` alerts can see.
            logger.warning("metrics: could not read the backlog from the database", exc_info=True)
            return
        pending.add_metric([], count)
        oldest_age.add_metric([], age)
        for state in ENDPOINT_STATES:
            endpoints.add_metric([state], states[state])
        yield from (pending, oldest_age, endpoints)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "webhook_pending_deliveries",
                "Deliveries still pending: due, scheduled for a retry, or parked (endpoint disabled or paused).",
            ),
            GaugeMetricFamily(
                "webhook_oldest_pending_age_seconds",
                "Seconds since the oldest due pending delivery became due; 0 when nothing is overdue.",
            ),
            GaugeMetricFamily(
                "webhook_endpoints",
                "Endpoints by state: active, disabled, paused (circuit breaker open).",
                labels=["state"],
            ),
        )

    @staticmethod
    def _backlog() -> tuple[int, float]:
        now = timezone.now()
        pending = Delivery.objects.filter(status=DeliveryStatus.PENDING)
        oldest_due = (
            pending.filter(next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("next_attempt_at", flat=True)
            .first()
        )
        age = max(0.0, (now - oldest_due).total_seconds()) if oldest_due else 0.0
        return pending.count(), age

    @staticmethod
    def _endpoint_states() -> dict[str, int]:
        row = Endpoint.objects.aggregate(
            enabled=Count("pk", filter=Q(is_active=True)),
            disabled=Count("pk", filter=Q(is_active=False)),
            paused=Count("pk", filter=Q(is_active=True, paused_until__gt=timezone.now())),
        )
        paused = row["paused"]
        return {"active": row["enabled"] - paused, "disabled": row["disabled"], "paused": paused}


DATABASE_COLLECTOR = DatabaseCollector()


def register_database_collector(registry: CollectorRegistry = REGISTRY) -> None:
    """Add the database gauges to `registry` once; a second call (or a reimport) does nothing."""
    try:
        registry.register(DATABASE_COLLECTOR)
    except ValueError:
        pass  # already registered: its names are taken


register_database_collector()


def start_worker_metrics_server(port: int | None = None, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread] | None:
    """Serve this process's metrics over HTTP from a daemon thread; return (server, thread).

    `port` None reads WEBHOOKS_WORKER_METRICS_PORT, where 0 means off (returns None); an
    explicit `port=0` binds an ephemeral port (`server.server_port` tells which). The default
    address 0.0.0.0 lets a Prometheus on another host scrape it; keep the port firewalled to it.

    One port per process: with several worker processes on one host (several `celery worker`
    commands, or replicas sharing the host network), give each its own
    WEBHOOKS_WORKER_METRICS_PORT, or the second fails to bind. The prefork pool is not covered:
    its child processes make the attempts, and their counters are not in the parent that
    serves; this project runs the threads pool, one process per worker.

    Stop it with `server.shutdown(); server.server_close(); thread.join()`.
    """
    if port is None:
        port = webhook_settings.WORKER_METRICS_PORT
        if not port:
            return None
    return start_http_server(port, addr=addr, registry=WORKER_REGISTRY)


_worker_server: tuple[WSGIServer, Thread] | None = None


def _serve_worker_metrics(sender=None, **kwargs) -> None:
    """worker_ready handler: start this worker's metrics server once, if a port is configured."""
    global _worker_server
    if _worker_server is not None:
        return
    try:
        _worker_server = start_worker_metrics_server()
    except OSError:
        # Metrics are not worth stopping deliveries for; say loudly why there are none.
        logger.exception(
            "could not serve worker metrics on port %s (another process on this host uses it?)",
            webhook_settings.WORKER_METRICS_PORT,
        )
        return
    if _worker_server is not None:
        server = _worker_server[0]
        logger.info("worker metrics served on %s:%s", server.server_address[0], server.server_port)


def connect_worker_signals() -> None:
    """Start the metrics server when a Celery worker is ready (call it from AppConfig.ready).

    `worker_ready` fires once, in the worker's main process, after the pool has started: with
    the threads pool that process makes every attempt. Safe to call more than once.
    """
    from celery.signals import worker_ready

    worker_ready.connect(_serve_worker_metrics, weak=False, dispatch_uid="deliveries.metrics.worker_ready")
