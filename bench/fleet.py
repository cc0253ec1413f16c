"""Worker processes for the benchmark: start K Celery workers, wait until they consume, read
their CPU, memory and probe counters, stop them. Also the CPU of the services they use."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from deliveries.celery import DELIVERY_QUEUE, FANOUT_QUEUE, MAINTENANCE_QUEUE, QUEUES, RETRY_QUEUE

BASE_DIR = Path(__file__).resolve().parent.parent
ALL_QUEUES = ",".join(QUEUES)
# The Procfile's fleet: `worker` (the delivery lane) and `retry_worker` (the retry lane).
LANES = (f"{FANOUT_QUEUE},{DELIVERY_QUEUE}", f"{RETRY_QUEUE},{MAINTENANCE_QUEUE}")
_SETPRIV = shutil.which("setpriv")
# Children get SIGKILL when the benchmark dies, whatever kills it (where util-linux has setpriv).
LAUNCHER = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


@dataclass
class Usage:
    """CPU seconds (user + system, children included) and resident memory of some processes."""

    cpu_s: float
    rss_bytes: list[int]


def usage(pids: list[int]) -> Usage:
    cpu, rss = 0.0, []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            times = process.cpu_times()
            cpu += times.user + times.system + times.children_user + times.children_system
            rss.append(process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True)))
        except psutil.Error:
            rss.append(0)
    return Usage(cpu, rss)


class Fleet:
    """K worker processes on the threads pool, each with the probe: each consuming every queue,
    or (`lanes`) the Procfile's two: one delivery-lane worker and one retry-lane worker."""

    def __init__(
        self,
        count: int,
        concurrency: int,
        env: dict[str, str],
        log_dir: Path,
        name: str,
        loglevel: str,
        lanes: bool = False,
    ) -> None:
        self.queues = list(LANES) if lanes else [ALL_QUEUES] * count
        count = len(self.queues)
        self.count, self.concurrency, self.log_dir, self.name = count, concurrency, log_dir, name
        self.probe_dir = log_dir / f"probe-{name}"
        self.probe_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.probe_dir.glob("*.json"):
            stale.unlink()
        self.env = {**env, "WEBHOOKS_BENCH_PROBE_DIR": str(self.probe_dir)}
        self.loglevel = loglevel
        self.processes: list[subprocess.Popen] = []
        self.beat: subprocess.Popen | None = None

    def argv(self, index: int) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", "webhooks_project", "worker"),
            *("-P", "threads", "-c", str(self.concurrency), "-Q", self.queues[index - 1]),
            *("--loglevel", self.loglevel, "-n", f"bench-{self.name}-{index}@%h"),
            # The benchmark's only additions: its probe, and no start-up handshake between workers.
            *("--without-mingle", "-I", "bench.probe"),
        ]

    def start(self, timeout: float = 60.0) -> "Fleet":
        for index in range(1, self.count + 1):
            log = self.log_dir / f"worker-{self.name}-{index}.log"
            with log.open("ab") as output:
                self.processes.append(
                    subprocess.Popen(
                        [*LAUNCHER, *self.argv(index)],
                        cwd=BASE_DIR,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops us
                    )
                )
        deadline = time.monotonic() + timeout
        while not all(snapshot.get("ready") for snapshot in self.snapshots()):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not consuming after {timeout:g} s; see {self.log_dir}")
            time.sleep(0.1)
        return self

    def start_beat(self) -> None:
        """The Procfile's beat beside the workers: the sweep (every WEBHOOKS_SWEEP_INTERVAL) sends
        what waits longer than a countdown may. Its own CPU is not counted with the workers'."""
        log = self.log_dir / f"beat-{self.name}.log"
        argv = [
            *(sys.executable, "-m", "celery", "-A", "webhooks_project", "beat", "--loglevel", self.loglevel),
            *("--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"),
            *("--pidfile", str(self.log_dir / f"beat-{self.name}.pid")),
        ]
        with log.open("ab") as output:
            self.beat = subprocess.Popen(
                [*LAUNCHER, *argv],
                cwd=BASE_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def check_alive(self) -> None:
        for index, process in enumerate(self.processes, 1):
            if process.poll() is not None:
                log = self.log_dir / f"worker-{self.name}-{index}.log"
                raise RuntimeError(f"worker {index} exited with {process.returncode}; see {log}")
        if self.beat is not None and self.beat.poll() is not None:
            raise RuntimeError(f"beat exited with {self.beat.returncode}; see {self.log_dir / f'beat-{self.name}.log'}")

    def snapshots(self) -> list[dict]:
        found = []
        for pid in self.pids:
            path = self.probe_dir / f"{pid}.json"
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                found.append({})
        return found

    def counters(self) -> dict:
        """The probes of every worker, added up (read twice the probe's interval after quiet)."""
        statements, connections, tasks = Counter(), Counter(), {}
        for snapshot in self.snapshots():
            statements.update(snapshot.get("statements", {}))
            connections.update(snapshot.get("connections", {}))
            for name, figures in snapshot.get("tasks", {}).items():
                total = tasks.setdefault(name, Counter())
                total.update(figures)
        return {"statements": statements, "connections": connections, "tasks": tasks}

    def usage(self) -> Usage:
        return usage(self.pids)

    def stop(self, timeout: float = 10.0) -> None:
        if self.beat is not None:
            self.processes.append(self.beat)  # stopped with the workers, the same way
            self.beat = None
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        self.processes = []

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def service_pids(port: int) -> list[int]:
    """The processes of the server listening on a loopback TCP port, with all its children
    (PostgreSQL's backends): their CPU is the server's share of the work."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return [conn.pid]
    return []


def server_cpu_s(pids: list[int]) -> float | None:
    """CPU seconds of a server so far: the process, its live children, and its exited children
    (PostgreSQL's postmaster reaps one backend per closed connection: their time lands in its
    children_* counters). None when the process cannot be seen."""
    if not pids:
        return None
    try:
        root = psutil.Process(pids[0])
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None
