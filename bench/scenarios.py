"""The scenarios of issue 7. Each starts its own fleet of workers on empty tables, warms it up,
measures one window and stops the fleet; sizes come from the command's options."""

import statistics
import time

from django.db import transaction
from django.db.models import Min

from deliveries import publish
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from endpoints.models import Endpoint

from .fleet import usage
from .measure import PUBLISHER, resource_figures
from .run import EVENT_TYPE, Bench, Window, make_endpoints, measure, publish_burst, publish_steady

# The figures every scenario reports at its top level (hol: those of its phase with the bad endpoint).
SUMMARY_KEYS = (
    "deliveries",
    "lost",
    "duplicated",
    "deliveries_per_second",
    "latency_ms",
    "sql_per_delivery",
    "worker_cpu_ms_per_delivery",
    "worker_rss_mb",
)


def burst(bench: Bench, events: int, batch: int, workers: int | None = None) -> dict:
    """`events` events to one endpoint, published as fast as publish_many goes."""
    fleet = bench.fleet("burst", workers)
    try:
        endpoints = make_endpoints(bench, "burst", ["/ok/burst"])

        def run() -> Window:
            started = time.monotonic()
            publish_burst("burst", events, batch)
            window = Window(bench, fleet, endpoints, "burst", {"/ok/burst"})
            window.extra["publish_seconds"] = round(time.monotonic() - started, 3)
            window.wait_received(bench.drain_timeout)
            return window

        result = measure(bench, fleet, run)
        result["workers"], result["concurrency"] = fleet.count, fleet.concurrency
        return result
    finally:
        fleet.stop()


def steady(bench: Bench, rate: float, seconds: float) -> dict:
    """`rate` events a second for `seconds`, one publish() per transaction, to one endpoint."""
    fleet = bench.fleet("steady")
    try:
        endpoints = make_endpoints(bench, "steady", ["/ok/steady"])

        def run() -> Window:
            _, reached = publish_steady("steady", rate, seconds)
            window = Window(bench, fleet, endpoints, "steady", {"/ok/steady"})
            window.extra.update(target_rate=rate, published_rate=reached)
            window.wait_received(bench.drain_timeout)
            return window

        return measure(bench, fleet, run)
    finally:
        fleet.stop()


def slow(bench: Bench, events: int, delay_ms: int, batch: int) -> dict:
    """A burst to one endpoint that takes `delay_ms` to answer every request."""
    fleet = bench.fleet("slow")
    path = f"/delay/{delay_ms}/slow"
    try:
        endpoints = make_endpoints(bench, "slow", [path])

        def run() -> Window:
            publish_burst("slow", events, batch)
            window = Window(bench, fleet, endpoints, "slow", {path})
            window.extra["receiver_delay_ms"] = delay_ms
            window.wait_received(bench.drain_timeout)
            return window

        return measure(bench, fleet, run)
    finally:
        fleet.stop()


def fanout(bench: Bench, endpoint_count: int, repeat: int) -> dict:
    """One event to `endpoint_count` endpoints, `repeat` times one after the other: when the
    delivery rows are committed, when the first send starts, when the last one arrives."""
    fleet = bench.fleet("fanout")
    paths = [f"/ok/fan/{i}" for i in range(endpoint_count)]
    try:
        endpoints = make_endpoints(bench, "fanout", paths)

        def run() -> Window:
            rounds = [one_fanout(bench, fleet, endpoints, paths) for _ in range(repeat)]
            window = Window(bench, fleet, endpoints, "fanout", set(paths))
            window.wait_received(bench.drain_timeout)
            window.extra["rounds"] = rounds
            for key in ("rows_committed_s", "fanout_task_started_s", "first_send_started_s", "first_receipt_s"):
                values = [r[key] for r in rounds if r[key] is not None]
                window.extra[key] = round(statistics.median(values), 3) if values else None
            window.extra["all_received_s"] = max((r["all_received_s"] or 0) for r in rounds) or None
            return window

        result = measure(bench, fleet, run)
        result["endpoints"] = endpoint_count
        return result
    finally:
        fleet.stop()


def one_fanout(bench: Bench, fleet, endpoints: list[Endpoint], paths: list[str]) -> dict:
    with PUBLISHER.phase("publish"), transaction.atomic():
        event = publish(EVENT_TYPE, {"fanout": True}, tenant="fanout")
    created = event.created_at.timestamp()
    rows = Delivery.objects.filter(event_id=event.pk)
    rows_committed = None
    deadline = time.monotonic() + bench.drain_timeout
    while time.monotonic() < deadline:
        if rows.count() >= len(endpoints):
            rows_committed = time.time() - created
            break
        time.sleep(0.005)
    window = Window(bench, fleet, endpoints, "fanout", set(paths), event_ids=[str(event.pk)])
    window.wait_received(bench.drain_timeout)
    window.wait_settled()
    arrivals = [min(times) for times in window.arrivals.values()]
    event.refresh_from_db()
    first_send = DeliveryAttempt.objects.filter(delivery__event_id=event.pk).aggregate(first=Min("started_at"))
    since = lambda at: None if at is None else round(at - created, 3)  # noqa: E731
    return {
        "rows_committed_s": since(rows_committed + created if rows_committed is not None else None),
        "fanout_task_started_s": since(event.fanned_out_at.timestamp() if event.fanned_out_at else None),
        "first_send_started_s": since(first_send["first"].timestamp() if first_send["first"] else None),
        "first_receipt_s": since(min(arrivals) if arrivals else None),
        "all_received_s": since(max(arrivals) if arrivals else None),
        "received": len(arrivals),
    }


def hol(bench: Bench, healthy: int, rate: float, seconds: float, request_timeout: float) -> dict:
    """Head-of-line blocking: `healthy` endpoints alone, then beside one that never answers
    (the workers' WEBHOOKS_REQUEST_TIMEOUT is `request_timeout`); every event goes to all.
    The fleet is the Procfile's: one delivery-lane worker and one retry-lane worker."""
    fleet = bench.fleet("hol", lanes=True, WEBHOOKS_REQUEST_TIMEOUT=str(request_timeout))
    try:
        phases = {}
        for phase, bad in (("without_bad_endpoint", False), ("with_bad_endpoint", True)):
            tenant = f"hol-{'b' if bad else 'a'}"
            paths = [f"/ok/{tenant}-{i}" for i in range(healthy)]
            bad_path = f"/timeout/{tenant}-bad"
            endpoints = make_endpoints(bench, tenant, paths + ([bad_path] if bad else []))

            def run(tenant=tenant, paths=paths, endpoints=endpoints) -> Window:
                _, reached = publish_steady(tenant, rate, seconds)
                window = Window(bench, fleet, endpoints, tenant, set(paths))
                window.extra.update(target_rate=rate, published_rate=reached, healthy_endpoints=len(paths))
                window.wait_received(bench.drain_timeout)
                return window

            bench.say(f"  phase {phase}: {rate:g} events/s for {seconds:g} s to {len(endpoints)} endpoints")
            phases[phase] = measure(bench, fleet, run)
            if bad:
                phases[phase]["bad_endpoint"] = bad_endpoint_state(endpoints[-1])
        p99 = [phases[p]["latency_ms"]["p99"] for p in ("without_bad_endpoint", "with_bad_endpoint")]
        return {
            **phases,
            "request_timeout_s": request_timeout,
            "healthy_p99_ratio": round(p99[1] / p99[0], 2) if all(p99) else None,
            # The summary keys every scenario has: the phase with the bad endpoint.
            **{k: phases["with_bad_endpoint"][k] for k in SUMMARY_KEYS},
        }
    finally:
        fleet.stop()


def bad_endpoint_state(endpoint: Endpoint) -> dict:
    endpoint.refresh_from_db()
    deliveries = Delivery.objects.filter(endpoint=endpoint)
    return {
        "attempts": DeliveryAttempt.objects.filter(delivery__endpoint=endpoint).count(),
        "deliveries_pending": deliveries.filter(status=DeliveryStatus.PENDING).count(),
        "deliveries_parked": deliveries.filter(status=DeliveryStatus.PENDING, next_attempt_at__isnull=True).count(),
        "breaker_open": endpoint.paused_until is not None,
    }


def soak(bench: Bench, deliveries: int, chunk: int, batch: int) -> dict:
    """Many deliveries through one fleet, in chunks (each waited for, so the broker never holds
    more than one chunk): worker memory after each chunk; lost and duplicated over the whole run."""
    fleet = bench.fleet("soak")
    try:
        endpoints = make_endpoints(bench, "soak", ["/ok/soak"])
        meter = bench.meter(fleet)
        before = meter.snapshot()
        rss = [round(sum(before.worker.rss_bytes) / 2**20, 1)]
        since, sent = 0, 0
        for number in range(0, deliveries, chunk):
            ids = publish_burst("soak", min(chunk, deliveries - number), batch)
            window = Window(bench, fleet, endpoints, "soak", {"/ok/soak"}, event_ids=ids, since=since)
            window.wait_received(bench.drain_timeout)
            since, sent = window.since, sent + len(ids)
            rss.append(round(sum(usage(fleet.pids).rss_bytes) / 2**20, 1))
            bench.say(f"  {sent} events published, {len(window.arrivals)} of this chunk's arrived, RSS {rss[-1]} MB")
        # The whole run at once: a delivery that arrived after its chunk's wait still counts.
        whole = Window(bench, fleet, endpoints, "soak", {"/ok/soak"})
        whole.wait_received(bench.drain_timeout)
        whole.wait_settled()
        result = whole.figures()
        result["latency_ms"] = None  # chunks of bursts: latency measures the queue, not the pipeline
        after = meter.snapshot()
        result.update(resource_figures(before, after, result["deliveries"], result["events"]))
        result["rss_mb_series"] = rss
        # Against the warmed-up worker, and against the worker after its first chunk.
        result["rss_growth_percent"] = round((rss[-1] - rss[0]) / rss[0] * 100, 1)
        result["rss_growth_after_first_chunk_percent"] = round((rss[-1] - rss[1]) / rss[1] * 100, 1)
        return result
    finally:
        fleet.stop()
