"""What the benchmark reads before and after a scenario, and the figures it derives.

Per delivery means per successful delivery of the scenario (an expected webhook-id that reached
its path). Worker figures cover every worker process of the scenario; server figures (PostgreSQL,
broker) are whole-server CPU, so they include anything else running on the machine then.
"""

import math
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from .environment import pg_database_counters
from .fleet import Fleet, Usage, server_cpu_s


class PublisherCounter:
    """Statements the benchmark process itself sends, by phase: `publish` (the host's side:
    publish() and its transaction) and `poll` (the benchmark watching the database)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self._local = threading.local()

    def __call__(self, execute, sql, params, many, context):
        self.counts[getattr(self._local, "phase", "poll")] += 1
        return execute(sql, params, many, context)

    @contextmanager
    def phase(self, name: str):
        previous = getattr(self._local, "phase", "poll")
        self._local.phase = name
        try:
            yield
        finally:
            self._local.phase = previous

    def install(self) -> None:
        from django.db import connection
        from django.db.backends.signals import connection_created

        def on_connect(sender, connection, **kwargs) -> None:
            if self not in connection.execute_wrappers:
                connection.execute_wrappers.append(self)

        connection_created.connect(on_connect, weak=False, dispatch_uid="bench.publisher")
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)


PUBLISHER = PublisherCounter()


@dataclass
class Snapshot:
    at: float
    worker: Usage
    counters: dict
    pg: dict[str, int]
    publisher: Counter
    bench_cpu_s: float
    receiver_cpu_s: float
    pg_cpu_s: float | None
    broker_cpu_s: float | None
    machine_busy_s: float


class Meter:
    """Takes snapshots of one fleet, the receiver, this process and the servers."""

    def __init__(self, fleet: Fleet, receiver_pid: int, pg_pids: list[int], broker_pids: list[int]) -> None:
        self.fleet, self.receiver_pid, self.pg_pids, self.broker_pids = fleet, receiver_pid, pg_pids, broker_pids

    def snapshot(self, settle: float = 1.1) -> Snapshot:
        """After `settle` seconds of quiet: the probes have written their files and PostgreSQL
        has published every backend's counters."""
        from django.db import connection

        time.sleep(settle)
        connection.close()  # our own backend's counts are published at disconnect
        own = psutil.Process().cpu_times()
        receiver = psutil.Process(self.receiver_pid).cpu_times()
        return Snapshot(
            at=time.time(),
            worker=self.fleet.usage(),
            counters=self.fleet.counters(),
            pg=pg_database_counters(),
            publisher=Counter(PUBLISHER.counts),
            bench_cpu_s=own.user + own.system,
            receiver_cpu_s=receiver.user + receiver.system,
            pg_cpu_s=server_cpu_s(self.pg_pids),
            broker_cpu_s=server_cpu_s(self.broker_pids),
            machine_busy_s=_machine_busy_s(),
        )


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent on anything but idling, all cores."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_s)
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    return {
        "count": len(values),
        "p50": ms(percentile(values, 0.50)),
        "p95": ms(percentile(values, 0.95)),
        "p99": ms(percentile(values, 0.99)),
        "max": ms(values[-1] if values else None),
    }


def _delta(after: Counter | dict, before: Counter | dict) -> Counter:
    result = Counter(after)
    result.subtract(before)
    return Counter({key: value for key, value in result.items() if value})


def per(value: float | None, count: int, digits: int = 2) -> float | None:
    return None if value is None or not count else round(value / count, digits)


def resource_figures(before: Snapshot, after: Snapshot, deliveries: int, events: int) -> dict:
    """SQL, connections, CPU and memory of the window between two snapshots."""
    statements = _delta(after.counters["statements"], before.counters["statements"])
    connections = _delta(after.counters["connections"], before.counters["connections"])
    tasks = {}
    for name, figures in after.counters["tasks"].items():
        old = before.counters["tasks"].get(name, {})
        count = figures.get("count", 0) - old.get("count", 0)
        if count:
            tasks[name] = {
                "count": count,
                "cpu_ms_per_task": round((figures["cpu_s"] - old.get("cpu_s", 0)) * 1000 / count, 3),
                "wall_ms_per_task": round((figures["wall_s"] - old.get("wall_s", 0)) * 1000 / count, 3),
            }
    in_task_cpu = sum(t["cpu_ms_per_task"] * t["count"] for t in tasks.values())
    worker_cpu_ms = (after.worker.cpu_s - before.worker.cpu_s) * 1000
    pg = {key: after.pg[key] - before.pg[key] for key in after.pg}
    publisher = _delta(after.publisher, before.publisher)
    mb = lambda values: [round(v / 2**20, 1) for v in values]  # noqa: E731
    server = lambda a, b: None if a is None or b is None else per((a - b) * 1000, deliveries)  # noqa: E731
    return {
        "sql_per_delivery": per(sum(statements.values()), deliveries),
        "sql_by_task_and_verb_per_delivery": {k: per(v, deliveries, 3) for k, v in sorted(statements.items())},
        "db_connections_per_delivery": per(sum(connections.values()), deliveries),
        "tasks_per_delivery": per(sum(t["count"] for t in tasks.values()), deliveries),
        "tasks": tasks,
        "worker_cpu_ms_per_delivery": per(worker_cpu_ms, deliveries),
        "worker_cpu_ms_in_task_bodies_per_delivery": per(in_task_cpu, deliveries),
        "worker_rss_mb": {
            "before": round(sum(before.worker.rss_bytes) / 2**20, 1),
            "after": round(sum(after.worker.rss_bytes) / 2**20, 1),
            "per_worker_before": mb(before.worker.rss_bytes),
            "per_worker_after": mb(after.worker.rss_bytes),
        },
        "publisher_sql_per_event": per(publisher.get("publish", 0), events),
        "postgres": {
            # Server-side: transactions and sessions of the benchmark database, less the
            # benchmark's own polling statements (each one its own transaction).
            "transactions_per_delivery": per(
                pg["xact_commit"] + pg["xact_rollback"] - publisher.get("poll", 0), deliveries
            ),
            "sessions_per_delivery": per(pg["sessions"], deliveries),
            "rows_inserted_per_delivery": per(pg["tup_inserted"], deliveries),
            "rows_updated_per_delivery": per(pg["tup_updated"], deliveries),
        },
        "server_cpu_ms_per_delivery": {
            "postgres": server(after.pg_cpu_s, before.pg_cpu_s),
            "broker": server(after.broker_cpu_s, before.broker_cpu_s),
            "receiver": per((after.receiver_cpu_s - before.receiver_cpu_s) * 1000, deliveries),
            "benchmark_process": per((after.bench_cpu_s - before.bench_cpu_s) * 1000, deliveries),
            # Everything the machine did in the window (the above, other work, the kernel): if it
            # is much more than their sum, something else was competing for the CPUs.
            "whole_machine": per((after.machine_busy_s - before.machine_busy_s) * 1000, deliveries),
        },
        "machine_cpu_busy_percent": round(
            100 * (after.machine_busy_s - before.machine_busy_s) / ((after.at - before.at) * (os.cpu_count() or 1)), 1
        ),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
