"""Fixtures: the real services (PostgreSQL, Redis, RabbitMQ), a real Celery worker, a real
receiver, and the child processes of the fault tests."""

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import kombu.pools
import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.worker import state as worker_state
from django.conf import settings as django_settings

from tests.distribution import built_distributions, built_wheel  # noqa: F401  (fixtures)
from tests.receiver import Receiver
from webhooks_project.celery import app as celery_app

if TYPE_CHECKING:
    from celery.worker import WorkController

    from tests.processes import Processes, RabbitMQ


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail loudly, before any test, when PostgreSQL or Redis is missing."""
    database = django_settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.exit("the suite runs on PostgreSQL: set DATABASE_URL=postgres://...", returncode=3)
    if not _answers(f"//{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}", 5432):
        pytest.exit(f"PostgreSQL does not answer at {database['HOST']}:{database['PORT']}", returncode=3)
    if not django_settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.exit("the suite runs on Redis: set CELERY_BROKER_URL=redis://...", returncode=3)
    if not _answers(django_settings.CELERY_BROKER_URL, 6379):
        pytest.exit(f"Redis does not answer at {django_settings.CELERY_BROKER_URL}", returncode=3)


def flush_broker() -> None:
    """Empty the test broker database: queues, and messages held unacknowledged."""
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).flushdb()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@contextmanager
def running_worker() -> Iterator["WorkController"]:
    """A real Celery worker (threads pool) consuming every queue, in this process, from the broker
    the Celery app points at; stopped on exit, and the database sessions its threads kept closed."""
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=8,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        try:
            yield worker
        finally:
            if worker.hub is not None:
                # The worker's event loop (kombu's Hub) sees the stop request only when its poll
                # returns: on RabbitMQ, after up to 10 s (Hub.fire_timers' max_delay; measured: 9 s
                # per test). Ask it to stop, then wake it (call_soon is thread-safe and wakes it).
                worker_state.should_terminate = 0
                worker.hub.call_soon(lambda: None)
    close_worker_connections()


@pytest.fixture
def celery_worker(transactional_db) -> Iterator["WorkController"]:
    """A real Celery worker (threads pool) consuming every queue from Redis, in this process.

    Its threads open their own database connections, so tests using it see only committed
    rows, as production does: they run with transactional_db.
    """
    flush_broker()
    with running_worker() as worker:
        yield worker
    flush_broker()


def close_worker_connections() -> None:
    """Close the database sessions the stopped worker's threads kept (workers keep one per
    thread across tasks, deliveries/celery.py); else they outlive the test."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
        )


@pytest.fixture
def processes(transactional_db, tmp_path) -> Iterator["Processes"]:
    """The test's child processes (tests/processes.py), on the test database; all killed at the
    end, whatever happened."""
    from django.db import connection

    from tests.processes import Processes, database_url

    procs = Processes(tmp_path, database_url(connection.settings_dict))
    try:
        yield procs
    finally:
        procs.close()


# --- RabbitMQ ---------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def rabbitmq(django_db_setup) -> "RabbitMQ":
    """The RabbitMQ server on 127.0.0.1:5672, on a virtual host of this run's own, named after the
    test database (two runs on two databases never share queues), created when missing (with
    rabbitmqctl, as root). When RabbitMQ cannot be had, its tests fail in CI and are skipped
    elsewhere, saying why."""
    from django.db import connection

    from tests.processes import RabbitMQ, RabbitMQUnavailable

    try:
        return RabbitMQ(f"webhooks_{connection.settings_dict['NAME']}").ensure_vhost()
    except RabbitMQUnavailable as error:
        if in_ci():
            pytest.fail(f"{error}\nCI is set: the RabbitMQ tests must run (.ci/run starts it).", pytrace=False)
        pytest.skip(f"{error}. Start it with `rabbitmq-server -detached`; with CI set this fails instead.")


@pytest.fixture
def amqp_broker(rabbitmq) -> Iterator["RabbitMQ"]:
    """`rabbitmq`, its webhook queues empty when the test starts and again when it has ended and
    no worker consumes them any more (request it before `processes`, whose workers die first)."""
    rabbitmq.purge()
    yield rabbitmq
    wait_until(lambda: not rabbitmq.consuming(), 15, "no worker left on the RabbitMQ queues", interval=0.1)
    rabbitmq.purge()


def _point_celery_at(env_url: str | None, conf_url: str | None) -> None:
    # Celery takes the CELERY_BROKER_URL environment variable before app.conf.broker_url
    # (celery/app/utils.py, Settings.broker_url, also behind broker_read_url/broker_write_url):
    # setting only the conf changes nothing while the variable is set, as it is in tests.
    if env_url is None:
        os.environ.pop("CELERY_BROKER_URL", None)
    else:
        os.environ["CELERY_BROKER_URL"] = env_url
    celery_app.conf["broker_url"] = conf_url
    # The app's connection and producer pools live in kombu's global pool groups, keyed by the
    # broker; one closed with force_close_all() stays there and is handed out again for the same
    # broker ("Acquire on closed pool"). So: close and forget them all, and let the app build new
    # ones, as Celery does after a fork (Celery._after_fork).
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app at the broker `url` meanwhile: what publish() and the tasks
    send, and what a worker started meanwhile (running_worker) consumes. Restored on exit."""
    saved = os.environ.get("CELERY_BROKER_URL"), celery_app.conf.get("broker_url")
    _point_celery_at(url, url)
    try:
        assert celery_app.conf.broker_read_url == celery_app.conf.broker_write_url == url
        yield
    finally:
        _point_celery_at(*saved)


@pytest.fixture
def celery_on_amqp(amqp_broker) -> Iterator["RabbitMQ"]:
    """This process's Celery app on RabbitMQ (`amqp_broker`) for the test, on Redis again after."""
    with celery_broker(amqp_broker.url):
        yield amqp_broker


@pytest.fixture
def celery_worker_amqp(transactional_db, celery_on_amqp) -> Iterator["WorkController"]:
    """celery_worker, on RabbitMQ: publishing and the worker both use `amqp_broker`."""
    with running_worker() as worker:
        yield worker


def wait_until(
    predicate: Callable[[], object], timeout: float = 15.0, what: str | None = None, interval: float = 0.05
) -> object:
    """Poll `predicate` until it returns something truthy (and return it); fail after `timeout`
    seconds with an AssertionError naming `what` (default: the predicate)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)
