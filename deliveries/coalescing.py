"""Coalescing of model hooks: what each object's saves left pending in the current transaction.

Savepoints are honoured without bookkeeping of our own: every state change registers an
`on_commit` marker, and Django itself drops the markers of a savepoint that rolls back (and all
of them on rollback, or once they ran after commit). A record is therefore live exactly while
its marker is still in `connection.run_on_commit`, and the database undid the record's writes
at the same moment.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction


@dataclass(frozen=True)
class PendingRecord:
    """What an object's saves in the current transaction left pending: kind `created` or
    `updated` (event `event_id`), `gone` (created then deleted), or `deleted`."""

    kind: str
    event_id: Any
    event_type: str
    tenant: str
    marker: Callable[[], None]


class PendingHooks:
    """Per database connection: for each object (model label, pk), a stack of the records its
    hooks left. The newest live record is the object's state; dead ones are popped on the way."""

    PRUNE_AT = 1000

    def __init__(self, connection) -> None:
        self.connection = connection
        self.records: dict[tuple[str, Any], list[PendingRecord]] = {}
        self.prune_at = self.PRUNE_AT
        self._scanned: tuple[list, int, set[int]] | None = None

    @classmethod
    def of(cls, connection) -> "PendingHooks":
        pending = getattr(connection, "_webhooks_pending_hooks", None)
        if pending is None:
            pending = cls(connection)
            connection._webhooks_pending_hooks = pending
        return pending

    def current(self, key: tuple[str, Any]) -> PendingRecord | None:
        """The object's live state in this transaction, or None."""
        stack = self.records.get(key)
        if not stack:
            return None
        live = self._live_markers()
        while stack and id(stack[-1].marker) not in live:
            stack.pop()
        if not stack:
            del self.records[key]
            return None
        return stack[-1]

    def push(
        self, key: tuple[str, Any], kind: str, event_id: Any = None, event_type: str = "", tenant: str = ""
    ) -> None:
        """Record the object's new state, live until its savepoint or transaction rolls back."""

        def marker() -> None:
            self.records.clear()  # committed: nothing is pending any more

        transaction.on_commit(marker, using=self.connection.alias, robust=True)
        self.records.setdefault(key, []).append(PendingRecord(kind, event_id, event_type, tenant, marker))
        if len(self.records) >= self.prune_at:
            self._prune()

    def _live_markers(self) -> set[int]:
        """Ids of the callbacks in `connection.run_on_commit`, scanned incrementally.

        Django appends to that list, and replaces it (never edits it in place) on savepoint
        rollback, rollback and commit; so while it is the same list, only its new tail needs
        reading. Without this, a transaction saving N hooked objects twice would cost N^2.
        """
        callbacks = self.connection.run_on_commit
        scanned = self._scanned
        if scanned is not None and scanned[0] is callbacks and scanned[1] <= len(callbacks):
            live, start = scanned[2], scanned[1]
        else:
            live, start = set(), 0
        live.update(id(func) for _sids, func, _robust in callbacks[start:])
        self._scanned = (callbacks, len(callbacks), live)
        return live

    def _prune(self) -> None:
        # Rolled-back transactions leave dead records behind; drop them now and then.
        live = self._live_markers()
        self.records = {
            key: alive for key, stack in self.records.items() if (alive := [r for r in stack if id(r.marker) in live])
        }
        self.prune_at = max(self.PRUNE_AT, 2 * len(self.records))
