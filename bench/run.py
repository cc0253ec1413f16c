"""The machinery every scenario shares: endpoints on the receiver, publishing, waiting for the
receiver and the database, and measuring one window with one fleet of workers."""

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from deliveries import publish, publish_many
from deliveries.models import Delivery, DeliveryStatus, Event
from endpoints.models import Endpoint

from .environment import empty_broker, reset_tables, wait_for
from .fleet import Fleet
from .measure import PUBLISHER, Meter, latency_summary, resource_figures
from .receiver import ReceiverProcess

EVENT_TYPE = "bench.tick"


@dataclass
class Bench:
    """What a scenario needs: the receiver, the worker environment and the options."""

    receiver: ReceiverProcess
    worker_env: dict[str, str]
    broker_url: str
    log_dir: Path
    workers: int
    concurrency: int
    loglevel: str
    drain_timeout: float
    pg_pids: list[int]
    broker_pids: list[int]
    say: Callable[[str], None] = print
    _fleets: int = 0

    def fleet(self, name: str, workers: int | None = None, lanes: bool = False, **env: str) -> Fleet:
        """A new fleet on empty tables and an empty broker, started and warmed up."""
        reset_tables()
        empty_broker(self.broker_url)
        self.receiver.reset()
        self._fleets += 1
        fleet = Fleet(
            workers or self.workers,
            self.concurrency,
            {**self.worker_env, **env},
            self.log_dir,
            f"{self._fleets}-{name}",
            self.loglevel,
            lanes=lanes,
        )
        started = time.monotonic()
        fleet.start()
        shape = "one per lane, as the Procfile" if lanes else "every queue each"
        self.say(
            f"  {fleet.count} worker(s) x {self.concurrency} threads ({shape}) consuming in "
            f"{time.monotonic() - started:.1f} s"
        )
        try:
            self.warm_up(fleet)
        except BaseException:
            fleet.stop()
            raise
        return fleet

    def warm_up(self, fleet: Fleet) -> None:
        """Two deliveries per worker thread before measuring: imports, sessions, thread pools."""
        count = 2 * fleet.count * self.concurrency
        endpoints = make_endpoints(self, "warmup", ["/ok/warmup"])
        publish_burst("warmup", count, batch=count)
        window = Window(self, fleet, endpoints, "warmup", expect_paths={"/ok/warmup"})
        window.wait_received(self.drain_timeout)

    def meter(self, fleet: Fleet) -> Meter:
        return Meter(fleet, self.receiver.pid, self.pg_pids, self.broker_pids)


def make_endpoints(bench: Bench, tenant: str, paths: Iterable[str], **fields) -> list[Endpoint]:
    """One endpoint per receiver path, through the public API (each gets a secret); `fields`
    (e.g. rate_limit=...) are given to every one."""
    return [Endpoint.objects.create(url=bench.receiver.url(path), tenant=tenant, **fields) for path in paths]


def ordering_key(number: int, keys: int) -> str:
    """The ordering key of the `number`th event of a burst over `keys` keys: round-robin."""
    return f"key-{number % keys}"


def burst_item(number: int, keys: int) -> tuple | dict:
    if not keys:
        return (EVENT_TYPE, {"n": number})
    return {"type": EVENT_TYPE, "data": {"n": number}, "ordering_key": ordering_key(number, keys)}


def publish_burst(tenant: str, count: int, batch: int, ordering_keys: int = 0) -> list[str]:
    """`count` events with publish_many, `batch` per transaction (fan-out enqueued per commit);
    returns their ids in publish order. With `ordering_keys`, the events take that many ordering
    keys in turn (ordering_key())."""
    ids: list[str] = []
    with PUBLISHER.phase("publish"):
        for start in range(0, count, batch):
            size = min(batch, count - start)
            with transaction.atomic():
                items = [burst_item(start + i, ordering_keys) for i in range(size)]
                events = publish_many(items, tenant=tenant)
            ids += [str(event.id) for event in events]
    return ids


def publish_steady(tenant: str, rate: float, seconds: float) -> tuple[list[str], float]:
    """One publish() per event, each in its own transaction (a web request's), `rate` a second
    on a fixed schedule; returns the ids and the rate reached."""
    ids: list[str] = []
    count = max(1, int(rate * seconds))
    started = time.monotonic()
    with PUBLISHER.phase("publish"):
        for i in range(count):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with transaction.atomic():
                ids.append(str(publish(EVENT_TYPE, {"n": i}, tenant=tenant).id))
    elapsed = time.monotonic() - started
    return ids, round(count / elapsed, 1) if elapsed else float(count)


@dataclass
class Window:
    """The deliveries of some events to some endpoints, as the receiver and the database see them."""

    bench: Bench
    fleet: Fleet
    endpoints: list[Endpoint]
    tenant: str
    expect_paths: set[str]
    event_ids: list[str] | None = None  # None: every event of the tenant
    since: int = 0
    arrivals: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    first_receipts: list[tuple[str, str]] = field(default_factory=list)  # in the receiver's order
    other_paths: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.events = Event.objects.filter(tenant=self.tenant)
        if self.event_ids is not None:
            self.events = self.events.filter(pk__in=self.event_ids)
        self.created = {f"evt_{pk.hex}": at.timestamp() for pk, at in self.events.values_list("id", "created_at")}
        self.expected = {(webhook_id, path) for webhook_id in self.created for path in self.expect_paths}

    def poll(self) -> None:
        """Take the receiver's new records."""
        records = self.bench.receiver.records(self.since)
        self.since += len(records)
        for arrival, webhook_id, path in records:
            key = (webhook_id, path)
            if key in self.expected:
                if key not in self.arrivals:
                    self.first_receipts.append(key)
                self.arrivals.setdefault(key, []).append(arrival)
            elif webhook_id in self.created:
                self.other_paths[path] += 1

    def received_all(self) -> bool:
        self.poll()
        self.fleet.check_alive()
        return len(self.arrivals) >= len(self.expected)

    def wait_received(self, timeout: float) -> float | None:
        """Until every expected delivery has arrived; seconds waited, or None once `timeout`
        seconds pass without a new arrival. A busy machine slows the arrivals, a stall stops
        them: only the stall gives up."""
        started = last_progress = time.monotonic()
        arrived = len(self.arrivals)
        while not self.received_all():
            if len(self.arrivals) > arrived:
                arrived, last_progress = len(self.arrivals), time.monotonic()
            elif time.monotonic() - last_progress > timeout:
                return None
            time.sleep(0.05)
        return time.monotonic() - started

    def wait_settled(self, timeout: float = 15.0) -> None:
        """Until no delivery to an expected endpoint is pending (its attempt is recorded)."""
        expected_urls = {self.bench.receiver.url(path) for path in self.expect_paths}
        ids = [endpoint.pk for endpoint in self.endpoints if endpoint.url in expected_urls]
        pending = Delivery.objects.filter(event__in=self.events, endpoint_id__in=ids, status=DeliveryStatus.PENDING)
        wait_for(lambda: not pending.exists(), timeout, interval=0.05)

    def figures(self) -> dict:
        """Throughput, latency, lost and duplicated of what arrived so far."""
        self.poll()
        firsts = {key: min(times) for key, times in self.arrivals.items()}
        latencies = [arrival - self.created[webhook_id] for (webhook_id, _), arrival in firsts.items()]
        delivered = len(firsts)
        start = min(self.created.values()) if self.created else 0.0
        end = max(firsts.values()) if firsts else start
        return {
            "events": len(self.created),
            "deliveries": delivered,
            "expected": len(self.expected),
            "lost": len(self.expected) - delivered,
            "duplicated": sum(len(times) - 1 for times in self.arrivals.values()),
            "seconds": round(end - start, 3),
            "deliveries_per_second": round(delivered / (end - start), 1) if end > start else None,
            "latency_ms": latency_summary(latencies),
        }


def measure(bench: Bench, fleet: Fleet, run) -> dict:
    """Snapshot, `run()` (publishes and returns a Window after waiting for its receipts), wait
    for the database to record every attempt, snapshot: the scenario's figures."""
    meter = bench.meter(fleet)
    before = meter.snapshot()
    window: Window = run()
    window.wait_settled()
    result = window.figures()
    after = meter.snapshot()
    result.update(resource_figures(before, after, result["deliveries"], result["events"]))
    if window.other_paths:
        result["requests_to_other_paths"] = dict(window.other_paths)
    result.update(window.extra)
    return result
