"""Fixtures: the real services (PostgreSQL, Redis), a real Celery worker, a real receiver."""

import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings

from tests.receiver import Receiver
from webhooks_project.celery import app as celery_app


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


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[object]:
    """A real Celery worker (threads pool) consuming every queue from Redis, in this process.

    Its threads open their own database connections, so tests using it see only committed
    rows, as production does: they run with transactional_db.
    """
    flush_broker()
    with start_worker(
        celery_app,
        pool="threads",
        concurrency=8,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
    flush_broker()
    close_worker_connections()


def close_worker_connections() -> None:
    """Close the database sessions the stopped worker's threads kept (workers keep one per
    thread across tasks, webhooks_project/celery.py); else they outlive the test."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
        )


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
