"""A smoke run of `manage.py webhooks_bench` at tiny sizes: every scenario completes, nothing is
lost, and the JSON report has its keys. Times are printed (shown with -s or on failure), never
asserted: CI machines are too noisy for that. The benchmark uses its own database
(webhooks_bench_smoke) and Redis db 13, never the suite's."""

import json
import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow

SMOKE = [
    *("--scenario", "all", "--compare-workers", "1,2", "--concurrency", "8"),
    *("--burst-events", "50", "--publish-batch", "25"),
    *("--steady-rate", "20", "--steady-seconds", "2"),
    *("--fanout-endpoints", "50", "--fanout-repeat", "1"),
    *("--slow-events", "20", "--slow-delay-ms", "100"),
    *("--hol-healthy", "3", "--hol-rate", "5", "--hol-seconds", "2", "--hol-request-timeout", "1"),
    *("--broker", "redis://127.0.0.1:6379/13", "--database", "webhooks_bench_smoke", "--drain-timeout", "30"),
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


@pytest.mark.timeout(180)
def test_benchmark_smoke_run_completes_without_loss(tmp_path):
    out = tmp_path / "bench.json"
    argv = [sys.executable, "manage.py", "webhooks_bench", *SMOKE, "--json-out", str(out)]
    argv += ["--log-dir", str(tmp_path / "logs")]

    completed = subprocess.run(argv, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=170, check=False)

    print(completed.stdout)  # the measured table: reported, not asserted
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
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
