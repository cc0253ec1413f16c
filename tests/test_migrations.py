"""Migration 0007 (the index of events/ on tenant, created_at, id) forward and backward: on
PostgreSQL built and dropped CONCURRENTLY, outside a transaction, so writes to a large event
table go on meanwhile; on SQLite (the quick start) a plain index."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
INDEX = "event_tenant_created"


def postgres_index() -> tuple[str, bool] | None:
    """The index's definition and whether PostgreSQL marks it valid, or None when absent."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [INDEX],
        )
        return cursor.fetchone()


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_the_index_is_built_and_dropped_concurrently():
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    assert postgres_index() == (
        f"CREATE INDEX {INDEX} ON public.deliveries_event USING btree (tenant, created_at, id)",
        True,
    )
    try:
        # When it is migrated back to 0006
        with connection.execute_wrapper(record):
            call_command("migrate", "deliveries", "0006", verbosity=0)
        assert postgres_index() is None
        assert f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"' in statements

        # and forward again
        statements.clear()
        with connection.execute_wrapper(record):
            call_command("migrate", "deliveries", verbosity=0)
    finally:
        call_command("migrate", "deliveries", verbosity=0)  # whatever happened, leave the schema whole

    # Then it is back, valid, and was built without locking out writes
    assert postgres_index() is not None and postgres_index()[1] is True
    assert any(sql.startswith(f'CREATE INDEX CONCURRENTLY "{INDEX}"') for sql in statements), statements


def sqlite_migrate(var_dir: Path, *target: str) -> None:
    """`manage.py migrate [target]` of the reference project on its quick-start SQLite file."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(DJANGO_SETTINGS_MODULE="webhooks_project.settings", WEBHOOKS_VAR_DIR=str(var_dir))
    command = [sys.executable, "manage.py", "migrate", *target, "--verbosity", "0"]
    result = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def sqlite_index_columns(var_dir: Path) -> list[str] | None:
    with sqlite3.connect(var_dir / "db.sqlite3") as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [INDEX]).fetchone():
            return None
        return [row[2] for row in db.execute(f"PRAGMA index_info({INDEX})")]


@pytest.mark.slow
def test_on_sqlite_it_is_a_plain_index_forward_and_backward(tmp_path):
    sqlite_migrate(tmp_path)
    assert sqlite_index_columns(tmp_path) == ["tenant", "created_at", "id"]

    sqlite_migrate(tmp_path, "deliveries", "0006")
    assert sqlite_index_columns(tmp_path) is None

    sqlite_migrate(tmp_path, "deliveries")
    assert sqlite_index_columns(tmp_path) == ["tenant", "created_at", "id"]
