"""Counters inside a benchmark worker, loaded with `celery worker -I bench.probe`.

When WEBHOOKS_BENCH_PROBE_DIR is set, this module counts, per task name:

- SQL statements sent through Django (an execute wrapper on every connection the process
  opens, by first keyword: SELECT, INSERT, UPDATE, SAVEPOINT...; BEGIN and COMMIT are issued by
  the driver, not through Django, and are not counted here: the benchmark takes transactions
  from PostgreSQL's own pg_stat_database instead);
- database connections opened (Django's `connection_created`);
- tasks run, their wall time and the CPU time of the thread that ran them.

and writes the totals as JSON to `<dir>/<pid>.json` five times a second, with `ready` once the
worker consumes. It changes nothing the worker does; without the variable it does nothing.
"""

import json
import os
import threading
import time
from collections import Counter

from celery import signals
from django.db.backends.signals import connection_created

PROBE_DIR = os.environ.get("WEBHOOKS_BENCH_PROBE_DIR", "")
OUTSIDE_TASKS = "-"
DUMP_INTERVAL = 0.2

_lock = threading.Lock()
_local = threading.local()
_state: dict = {}


def _reset() -> None:
    _state.update(
        statements=Counter(), connections=Counter(), tasks=Counter(), wall=Counter(), cpu=Counter(), ready=False
    )


def _task() -> str:
    return getattr(_local, "task", OUTSIDE_TASKS)


def _count_statement(execute, sql, params, many, context):
    verb = sql.lstrip().split(None, 1)[0].upper() if sql else "?"
    with _lock:
        _state["statements"][f"{_task()} {verb}{' (many)' if many else ''}"] += 1
    return execute(sql, params, many, context)


def _on_connection_created(sender, connection, **kwargs) -> None:
    if _count_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_statement)
    with _lock:
        _state["connections"][_task()] += 1


def _on_task_prerun(sender=None, **kwargs) -> None:
    _local.task = sender.name
    _local.started = (time.perf_counter(), time.thread_time())


def _on_task_postrun(sender=None, **kwargs) -> None:
    wall, cpu = _local.started
    with _lock:
        _state["tasks"][sender.name] += 1
        _state["wall"][sender.name] += time.perf_counter() - wall
        _state["cpu"][sender.name] += time.thread_time() - cpu
    _local.task = OUTSIDE_TASKS


def _on_worker_ready(**kwargs) -> None:
    with _lock:
        _state["ready"] = True
    _dump()


def snapshot() -> dict:
    with _lock:
        return {
            "pid": os.getpid(),
            "ready": _state["ready"],
            "statements": dict(_state["statements"]),
            "connections": dict(_state["connections"]),
            "tasks": {
                name: {"count": count, "wall_s": _state["wall"][name], "cpu_s": _state["cpu"][name]}
                for name, count in _state["tasks"].items()
            },
        }


def _dump() -> None:
    path = os.path.join(PROBE_DIR, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as output:
        json.dump(snapshot(), output)
    os.replace(path + ".tmp", path)


def _dump_forever() -> None:
    while True:
        time.sleep(DUMP_INTERVAL)
        _dump()


def _start() -> None:
    _reset()
    threading.Thread(target=_dump_forever, name="bench-probe", daemon=True).start()


def _on_worker_process_init(**kwargs) -> None:
    _start()  # a pool child (prefork): counters of its own, in a file of its own


if PROBE_DIR:
    connection_created.connect(_on_connection_created, dispatch_uid="bench.probe")
    signals.task_prerun.connect(_on_task_prerun, dispatch_uid="bench.probe")
    signals.task_postrun.connect(_on_task_postrun, dispatch_uid="bench.probe")
    signals.worker_ready.connect(_on_worker_ready, dispatch_uid="bench.probe")
    signals.worker_process_init.connect(_on_worker_process_init, dispatch_uid="bench.probe")
    _start()
