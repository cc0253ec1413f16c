"""A smoke run of `manage.py webhooks_bench` at tiny sizes: every scenario completes, nothing is
lost, and the JSON report has its keys. Times are printed (shown with -s or on failure), never
asserted: CI machines are too noisy for that. The benchmark uses its own database
(webhooks_bench_smoke_<the suite's>) and Redis db 13, never the suite's.

No bound here is a wall clock for the whole run, which took 57 s alone and over 170 s on a busy
machine: the benchmark waits for deliveries while they keep arriving (--drain-timeout counts from
the last arrival), and this test gives up only when the benchmark has printed nothing for
SILENCE seconds (it prints a line as each scenario and each fleet of workers starts)."""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.conf import settings

from bench.delivery_control import busiest_window, order_violations

# Longer than the quietest stretch of a stalled scenario: --drain-timeout without an arrival,
# then the benchmark's own waits for the database (15 s) and for its workers to stop (20 s).
SILENCE = 300
SMOKE = [
    *("--scenario", "all", "--compare-workers", "1,2", "--concurrency", "4"),
    *("--burst-events", "50", "--publish-batch", "25"),
    # ordered: 10 events per key; limited: 10 requests per second binds the 30 events.
    *("--ordering-keys", "5", "--limited-binding-events", "30", "--limited-binding-limit", "10"),
    *("--steady-rate", "20", "--steady-seconds", "2"),
    *("--fanout-endpoints", "50", "--fanout-repeat", "1"),
    *("--slow-events", "20", "--slow-delay-ms", "100"),
    *("--hol-healthy", "3", "--hol-rate", "5", "--hol-seconds", "2", "--hol-request-timeout", "1"),
    # A lease of 15 s instead of 95 s: a rate-limited batch's overflow waits a lease and a period
    # when its batch took the last free slots (the binding run would stall ~96 s without this).
    *("--worker-env", "WEBHOOKS_REQUEST_TIMEOUT=5", "--worker-env", "WEBHOOKS_CLAIM_MARGIN=5"),
    *("--broker", "redis://127.0.0.1:6379/13", "--drain-timeout", "60"),
]
SUMMARY_KEYS = {
    "deliveries",
    "deliveries_per_second",
    "latency_ms",
    "sql_per_delivery",
    "worker_cpu_ms_per_delivery",
    "worker_rss_mb",
    "lost",
    "duplicated",
}


def smoke_database() -> str:
    """The benchmark's database, named after the suite's: two checkouts testing on one server
    never share one (a database migrated by another branch's code breaks this one's run)."""
    suite = re.sub(r"[^a-z0-9_]", "_", str(settings.DATABASES["default"]["NAME"]).lower())
    return f"webhooks_bench_smoke_{suite}"[:63]


def run_while_it_prints(argv: list[str], silence: float) -> tuple[int, str]:
    """Run `argv` (stderr into stdout) until it exits; end it if it prints nothing for `silence`
    seconds. Returns its exit code and output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # lines arrive as printed, not in blocks
    process = subprocess.Popen(
        argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)  # the output has ended

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    while True:
        try:
            line = lines.get(timeout=silence)
        except queue.Empty:
            # Ctrl-C: its finally blocks stop the workers (own sessions) and the receiver.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            pytest.fail(f"the benchmark printed nothing for {silence} s:\n{''.join(output)[-6000:]}")
        if line is None:
            return process.wait(), "".join(output)
        output.append(line)


# Only a runaway meets this: the real bound is SILENCE without a line.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_benchmark_smoke_run_completes_without_loss(tmp_path):
    out = tmp_path / "bench.json"
    argv = [sys.executable, "manage.py", "webhooks_bench", *SMOKE, "--json-out", str(out)]
    argv += ["--database", smoke_database()]
    argv += ["--log-dir", str(tmp_path / "logs")]

    started = time.monotonic()
    returncode, output = run_while_it_prints(argv, SILENCE)

    print(output)  # the measured table: reported, not asserted
    print(f"smoke run: {time.monotonic() - started:.0f} s")
    assert returncode == 0, output[-8000:]
    results = json.loads(out.read_text())
    scenarios = results["scenarios"]
    named = ("burst", "ordered", "limited", "steady", "fanout", "slow", "hol")
    assert set(scenarios) == {*named, "compare_workers"}
    assert set(scenarios["compare_workers"]) == {"1", "2"}
    every = [*(scenarios[name] for name in named), scenarios["limited"]["binding"]]
    every += [*scenarios["compare_workers"].values(), *(scenarios["hol"][p] for p in ("without_bad_endpoint",))]
    for result in every:
        assert SUMMARY_KEYS <= set(result), SUMMARY_KEYS - set(result)
        assert result["lost"] == 0
        assert result["deliveries"] == result.get("expected", result["deliveries"])
        assert {"p50", "p95", "p99"} <= set(result["latency_ms"])
        assert {"before", "after"} <= set(result["worker_rss_mb"])
    assert scenarios["fanout"]["rows_committed_s"] is not None
    assert scenarios["fanout"]["first_send_started_s"] is not None
    assert scenarios["hol"]["healthy_p99_ratio"] is not None
    assert_delivery_control_figures(results)
    assert {t["target"] for t in results["targets"]}, "the report checks issue 7's targets"


def assert_delivery_control_figures(results: dict) -> None:
    """Issue 15's scenarios: the burst with ordering keys kept each key's order, the binding
    rate limit held at the receiver, and both are compared with the burst."""
    scenarios = results["scenarios"]
    ordered = scenarios["ordered"]
    assert (ordered["ordering_keys"], ordered["order_violations"]) == (5, 0)
    limited, binding = scenarios["limited"], scenarios["limited"]["binding"]
    assert limited["busiest_window"] <= limited["rate_limit"]
    assert binding["rate_limit"] == 10
    assert binding["requests"] >= binding["deliveries"] == 30
    assert 0 < binding["busiest_window"] <= 10, "no second at the receiver holds more than the limit"
    assert 0 < binding["achieved_rate_per_s"]
    for name in ("ordered", "limited"):
        figures = results["overhead_vs_burst"][name]
        assert set(figures) == {
            "deliveries_per_second",
            "p50",
            "p99",
            "sql_per_delivery",
            "worker_cpu_ms_per_delivery",
        }
        assert all(f["percent"] is not None and f["burst"] > 0 for f in figures.values()), figures
    checks = {t["target"]: t["met"] for t in results["targets"] if t["scenario"] in ("ordered", "limited")}
    assert len(checks) == 2 and all(checks.values()), checks


def test_order_violations_counts_first_receipts_behind_a_later_event_of_their_key():
    # Given six events over two keys in turn (key-0: events 0, 2, 4; key-1: events 1, 3, 5)
    published = [str(uuid.uuid4()) for _ in range(6)]
    webhook_id = [f"evt_{uuid.UUID(pk).hex}" for pk in published]
    # Then keys interleaving, each in its own order, is no violation
    in_order = [webhook_id[n] for n in (1, 0, 3, 2, 4, 5)]
    assert order_violations(in_order, published, keys=2) == 0
    # And event 2 arriving after event 4 of its key is one
    assert order_violations([webhook_id[n] for n in (0, 1, 4, 3, 2, 5)], published, keys=2) == 1


def test_busiest_window_counts_requests_less_than_a_period_apart():
    assert busiest_window([], 1.0) == 0
    assert busiest_window([0.0, 0.5, 0.99, 1.0, 1.5], 1.0) == 3
    assert busiest_window([0.0, 1.0, 2.0, 3.0], 1.0) == 1
