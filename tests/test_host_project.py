"""The package proven in a real host (issue 12): a separate Django project (tests/host_project)
installs the built wheel into a virtual environment of its own, wires its own Celery app with
`configure(app)`, and on PostgreSQL and Redis runs the whole pipeline: a model hook and host
code publish, a worker started without -Q delivers, beat writes the jobs into its tables, and a
loopback receiver verifies every request with `standardwebhooks`. The repository is never on
the host's sys.path, so a file missing from the wheel fails this test."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
import standardwebhooks
from cryptography.fernet import Fernet
from django.conf import settings as django_settings

from tests.conftest import wait_until
from tests.receiver import Receiver

REPO = Path(__file__).resolve().parent.parent
HOST = REPO / "tests" / "host_project"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Named after the suite's own, so that runs against different databases and brokers never meet.
DATABASE = f"{django_settings.DATABASES['default']['NAME']}_host"
BROKER = django_settings.CELERY_BROKER_URL  # no in-process worker runs during this test


def _admin_connection(dbname: str = "postgres"):
    database = django_settings.DATABASES["default"]
    connection = psycopg2.connect(
        host=database["HOST"] or "127.0.0.1",
        port=database["PORT"] or 5432,
        user=database["USER"] or "postgres",
        password=database["PASSWORD"] or None,
        dbname=dbname,
    )
    connection.autocommit = True
    return connection


def _drop_database(cursor) -> None:
    cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [DATABASE])
    cursor.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')


@pytest.fixture
def host_database() -> Iterator[str]:
    """A PostgreSQL database of the host's own, dropped afterwards."""
    connection = _admin_connection()
    with connection.cursor() as cursor:
        _drop_database(cursor)
        cursor.execute(f'CREATE DATABASE "{DATABASE}"')
    try:
        yield DATABASE
    finally:
        with connection.cursor() as cursor:
            _drop_database(cursor)
        connection.close()


@pytest.fixture
def host_venv(tmp_path_factory, built_wheel: Path) -> Path:
    """A fresh virtual environment with the wheel (and its dependencies) installed, nothing of
    the repository."""
    venv = tmp_path_factory.mktemp("host") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{built_wheel}[postgres,api]"],
        check=True,
        timeout=600,
    )
    return venv


def _host_env(venv: Path, database: str) -> dict[str, str]:
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "HOST_DATABASE_NAME": database,
        "HOST_BROKER_URL": BROKER,
        "HOST_SECRET_KEY": Fernet.generate_key().decode(),
    }


def _run(venv: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), *args],
        cwd=HOST,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _start(venv: Path, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(venv / "bin" / "celery"), "-A", "host", *args],
        cwd=HOST,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _periodic_tasks(database: str) -> set[str]:
    """The names of django-celery-beat's periodic tasks in the host's database."""
    connection = _admin_connection(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM django_celery_beat_periodictask")
            return {name for (name,) in cursor.fetchall()}
    finally:
        connection.close()


def test_a_host_project_installs_the_wheel_and_delivers_signed_webhooks(host_venv, host_database, tmp_path):
    # Given the host project, migrated in its own database, with its worker (no -Q) and beat
    env = _host_env(host_venv, host_database)
    broker = redis.Redis.from_url(BROKER)
    broker.flushdb()
    _run(host_venv, env, "manage.py", "migrate", "--noinput")
    receiver = Receiver().start()
    worker = _start(host_venv, env, tmp_path / "worker.log", "worker", "-P", "threads", "-c", "4", "-l", "INFO")
    beat = _start(
        host_venv,
        env,
        tmp_path / "beat.log",
        "beat",
        "-S",
        "django_celery_beat.schedulers:DatabaseScheduler",
        "-l",
        "INFO",
    )
    try:
        # When the host's code saves an Order (its model hook publishes order.created) and
        # publishes an event of its own
        out = _run(
            host_venv, env, "manage.py", "shell", "-c", f"from shop.scenario import run; run({receiver.url('/hook')!r})"
        )
        result = json.loads(out.strip().splitlines()[-1])

        # Then the apps were imported from the virtual environment, never from the repository
        for package in result["packages"]:
            assert package.startswith(str(host_venv)), package

        # and the receiver gets both, signed, verified by another implementation
        requests = receiver.wait_for(2, "/hook", timeout=120)
        verifier = standardwebhooks.Webhook(result["secret"])
        delivered = {}
        for request in requests:
            payload = verifier.verify(request.body, {k.lower(): v for k, v in request.headers.items()})
            delivered[payload["type"]] = payload
        assert set(delivered) == {"order.created", "shop.ping"}
        assert delivered["order.created"]["data"]["id"] == result["order"]
        assert delivered["order.created"]["data"]["total"] == "12.50"
        assert delivered["shop.ping"]["id"] == result["event"]

        # and the host's admin shows the webhook screens
        assert result["admin"] == dict.fromkeys(result["admin"], 200)
        assert result["admin_lists_endpoint"]

        # and its customer lists the events through the API mounted in the host's urls
        assert result["api"]["events"] == 200 and result["api"]["schema"] == 200
        assert set(result["api"]["event_types"]) == {"order.created", "shop.ping"}

        # and beat wrote the pipeline's jobs into django-celery-beat's tables by itself
        jobs = {"webhooks-sweep-due", "webhooks-health", "webhooks-retention"}
        wait_until(lambda: jobs <= _periodic_tasks(host_database), timeout=120, what="beat's periodic tasks")
        # and the worker without -Q also runs the maintenance lane's sweep
        worker_log = tmp_path / "worker.log"
        wait_until(
            lambda: "deliveries.sweep_due" in worker_log.read_text() and "succeeded" in worker_log.read_text(),
            timeout=120,
            what="a sweep run by the worker",
        )
    finally:
        for process in (worker, beat):
            _stop(process)
        receiver.stop()
        broker.flushdb()
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
