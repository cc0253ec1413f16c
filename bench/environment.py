"""The benchmark's own database and broker: never the developer's data, never the suite's.

- Database: `webhooks_bench` (or `--database NAME`, which must start with `webhooks_bench`)
  on the server of DATABASE_URL (default 127.0.0.1:5432), created and migrated on first use,
  its tables emptied before every scenario.
- Broker: Redis db 14 by default (db 15 belongs to the test suite and is refused) or an AMQP
  URL. The benchmark refuses a broker where something else is consuming the webhook queues,
  then empties it.
"""

import os
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis
from kombu import Connection

from deliveries.celery import QUEUES

DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"
SUITE_REDIS_DB = 15
RUN_LOCK = 7_000_000_007  # pg_advisory_lock key of a running benchmark


class EnvironmentError_(RuntimeError):
    """The benchmark cannot run here without touching someone else's data."""


def bench_database_url(name: str, server_url: str | None = None) -> str:
    """DATABASE_URL's server (user, host, port) with the benchmark's own database name."""
    if not name.startswith("webhooks_bench"):
        raise EnvironmentError_(f"the benchmark database name must start with 'webhooks_bench', not {name!r}")
    parts = urlsplit(server_url or os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL)
    if not parts.scheme.startswith("postgres"):
        parts = urlsplit(DEFAULT_SERVER_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def ensure_database(url: str) -> bool:
    """Create the database of `url` if it does not exist (connecting to `postgres` on the same
    server); True if it was created."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    connection = psycopg2.connect(maintenance, connect_timeout=5)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone():
                return False
            cursor.execute(f'CREATE DATABASE "{name}"')
            return True
    finally:
        connection.close()


def lock_database(url: str):
    """A connection holding the benchmark database's advisory lock for the whole run, so two
    runs never empty each other's tables; EnvironmentError_ if another run holds it."""
    connection = psycopg2.connect(url, connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RUN_LOCK])
        if not cursor.fetchone()[0]:
            connection.close()
            raise EnvironmentError_(f"another benchmark is running on {urlsplit(url).path.lstrip('/')}")
    return connection


def reset_tables() -> None:
    """Empty every table the pipeline writes (endpoints included), in the benchmark database."""
    from django.apps import apps
    from django.db import connection

    assert connection.settings_dict["NAME"].startswith("webhooks_bench"), connection.settings_dict["NAME"]
    tables = [
        model._meta.db_table
        for app_label in ("deliveries", "endpoints")
        for model in apps.get_app_config(app_label).get_models()
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


PG_COUNTERS = ("xact_commit", "xact_rollback", "sessions", "tup_inserted", "tup_updated", "tup_fetched")


def pg_database_counters() -> dict[str, int]:
    """PostgreSQL's own counters for the benchmark database (pg_stat_database), as of now.

    PostgreSQL 15 publishes a backend's counts when its transaction ends, at most once a second,
    and at disconnect; read this a second after the work stopped."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(f"SELECT {', '.join(PG_COUNTERS)} FROM pg_stat_database WHERE datname = current_database()")
        row = cursor.fetchone()
    return dict(zip(PG_COUNTERS, row, strict=True))


def broker_kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    raise EnvironmentError_(f"the benchmark runs on Redis or RabbitMQ, not {url!r}")


def redis_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path or 0)


def empty_broker(url: str, refuse_if_used: bool = False) -> None:
    """Empty the webhook queues (Redis: the whole db). With `refuse_if_used` (before the
    benchmark itself connects), refuse a broker someone else is using."""
    if broker_kind(url) == "redis":
        db = redis_db(url)
        if db == SUITE_REDIS_DB:
            raise EnvironmentError_("Redis db 15 belongs to the test suite: give the benchmark another db")
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        me = client.client_id()
        others = [c for c in client.client_list() if int(c.get("db", -1)) == db and int(c["id"]) != me]
        if others and refuse_if_used:
            raise EnvironmentError_(
                f"{len(others)} other client(s) are connected to Redis db {db} ({others[0].get('cmd')}, "
                f"{others[0].get('addr')}): give the benchmark a db of its own (--broker redis://.../N)"
            )
        client.flushdb()
        client.close()
        return
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.default_channel
        for queue in QUEUES:
            try:
                _, _, consumers = channel.queue_declare(queue, passive=True)
            except Exception:  # the queue does not exist yet: nobody is using it
                channel = connection.channel()
                continue
            if consumers and refuse_if_used:
                raise EnvironmentError_(
                    f"{consumers} consumer(s) are attached to {queue} on {url}: use a vhost of your own"
                )
            channel.queue_purge(queue)


def wait_for(predicate, timeout: float, interval: float = 0.02) -> float | None:
    """Poll until `predicate()` is true; seconds waited, or None on timeout."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(interval)
