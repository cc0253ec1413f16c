"""Operations for this app's migrations that behave per database vendor."""

from django.db.migrations import AddIndex

__all__ = ["AddIndexConcurrentlyOnPostgres"]


class AddIndexConcurrentlyOnPostgres(AddIndex):
    """An index built without locking the table on PostgreSQL, a plain one elsewhere.

    On PostgreSQL this is django.contrib.postgres's AddIndexConcurrently: CREATE INDEX
    CONCURRENTLY lets inserts and updates go on while the index builds (a plain CREATE INDEX
    blocks every write to the table until it is done, minutes on a table of 100M events). It
    cannot run in a transaction, so the migration using it sets `atomic = False`. On SQLite (the
    quick start), which has no CONCURRENTLY, it is a plain AddIndex. contrib.postgres is
    imported only on PostgreSQL: it needs a PostgreSQL driver, which a SQLite host may lack.

    If a concurrent build fails or is cancelled, PostgreSQL keeps an INVALID index of that name
    and the next `migrate` stops on it: `DROP INDEX CONCURRENTLY <name>;` then migrate again.
    """

    def _concurrently(self, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return None
        from django.contrib.postgres.operations import AddIndexConcurrently

        return AddIndexConcurrently(self.model_name, self.index)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if concurrent := self._concurrently(schema_editor):
            concurrent.database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if concurrent := self._concurrently(schema_editor):
            concurrent.database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            super().database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self) -> str:
        return f"{super().describe()} (concurrently on PostgreSQL)"
