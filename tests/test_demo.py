"""The quick-start demo (`make demo`) end to end, on the embedded defaults it is made for:
SQLite and the filesystem broker in a fresh var/ directory, a real worker, beat and receiver."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_TIMEOUT = 150  # seconds: the demo waits up to 90 s for deliveries, plus start and stop


def summary_value(output: str, label: str) -> str:
    match = re.search(rf"^  {re.escape(label)}\s+(.+)$", output, re.MULTILINE)
    assert match, f"no {label!r} line in the summary:\n{output}"
    return match.group(1)


def demo_logs(var_dir: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted((var_dir / "demo").glob("*.log")))


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT + 60)
def test_demo_delivers_and_verifies_every_event_on_a_fresh_var_dir(tmp_path):
    # Given the quick-start environment: no DATABASE_URL or CELERY_BROKER_URL, a fresh var dir
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.pop("WEBHOOKS_RETRY_SCHEDULE", None)
    env.update(DJANGO_SETTINGS_MODULE="webhooks_project.settings", WEBHOOKS_VAR_DIR=str(tmp_path))

    # When the demo runs without serving the admin
    command = [sys.executable, "manage.py", "webhooks_demo", "--no-serve", "--events", "10", "--timeout", "90"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=DEMO_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()  # SIGTERM: the demo stops its worker and beat before exiting
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"the demo did not finish within {DEMO_TIMEOUT} s:\n{output}\n{demo_logs(tmp_path)}")

    # Then it exits 0, and its summary says every delivery succeeded and every request verified
    assert process.returncode == 0, f"exit code {process.returncode}:\n{output}\n{demo_logs(tmp_path)}"
    assert summary_value(output, "events published") == "10"
    deliveries = int(summary_value(output, "deliveries").split()[0])
    assert deliveries > 10  # the catch-all endpoint gets all 10, the order.* endpoint some too
    assert summary_value(output, "succeeded / failed") == f"{deliveries} / 0"
    attempts = int(summary_value(output, "attempts made").split()[0])
    assert attempts > deliveries  # the receiver refused some first attempts: retries happened
    assert int(summary_value(output, "receiver verified").split()[0]) == attempts
    assert summary_value(output, "failed verification") == "0"
    assert "Result: OK" in output
    # The development key is a line of the demo's own, not a system check warning above its banner
    assert re.search(r"^  secrets     development key", output, re.MULTILINE), output
    assert "W010" not in output
    assert "W010" not in demo_logs(tmp_path)  # nor in the worker's and beat's logs
    assert (tmp_path / "db.sqlite3").exists()
    assert (tmp_path / "demo" / "worker.log").exists()
