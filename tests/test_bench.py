"""A smoke run of `manage.py webhooks_bench` at tiny sizes: every scenario completes, nothing is
lost, and the JSON report has its keys. Times are printed (shown with -s or on failure), never
asserted: CI machines are too noisy for that. The benchmark uses its own database
(webhooks_bench_smoke) and Redis db 13, never the suite's.

No bound here is a wall clock for the whole run, which took 57 s alone and over 170 s on a busy
machine: the benchmark waits for deliveries while they keep arriving (--drain-timeout counts from
the last arrival), and this test gives up only when the benchmark has printed nothing for
SILENCE seconds (it prints a line as each scenario and each fleet of workers starts)."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow

# Longer than the quietest stretch of a stalled scenario: --drain-timeout without an arrival,
# then the benchmark's own waits for the database (15 s) and for its workers to stop (20 s).
SILENCE = 300
SMOKE = [
    *("--scenario", "all", "--compare-workers", "1,2", "--concurrency", "4"),
    *("--burst-events", "50", "--publish-batch", "25"),
    *("--steady-rate", "20", "--steady-seconds", "2"),
    *("--fanout-endpoints", "50", "--fanout-repeat", "1"),
    *("--slow-events", "20", "--slow-delay-ms", "100"),
    *("--hol-healthy", "3", "--hol-rate", "5", "--hol-seconds", "2", "--hol-request-timeout", "1"),
    *("--broker", "redis://127.0.0.1:6379/13", "--database", "webhooks_bench_smoke", "--drain-timeout", "60"),
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
@pytest.mark.timeout(1800)
def test_benchmark_smoke_run_completes_without_loss(tmp_path):
    out = tmp_path / "bench.json"
    argv = [sys.executable, "manage.py", "webhooks_bench", *SMOKE, "--json-out", str(out)]
    argv += ["--log-dir", str(tmp_path / "logs")]

    started = time.monotonic()
    returncode, output = run_while_it_prints(argv, SILENCE)

    print(output)  # the measured table: reported, not asserted
    print(f"smoke run: {time.monotonic() - started:.0f} s")
    assert returncode == 0, output[-8000:]
    results = json.loads(out.read_text())
    scenarios = results["scenarios"]
    assert set(scenarios) == {"burst", "steady", "fanout", "slow", "hol", "compare_workers"}
    assert set(scenarios["compare_workers"]) == {"1", "2"}
    every = [*(scenarios[name] for name in ("burst", "steady", "fanout", "slow", "hol"))]
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
    assert {t["target"] for t in results["targets"]}, "the report checks issue 7's targets"
