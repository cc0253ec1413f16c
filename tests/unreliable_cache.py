"""A local-memory Django cache that fails the way production caches do when their server is gone.

Used as the receiving project's default cache in tests/test_receiver_failopen.py, so that the
receiver toolkit's default dedupe store meets the same answers it would meet in production:

- "swallow": django-redis with `IGNORE_EXCEPTIONS`: `add`, `set` and `delete` return None, `get`
  returns the default;
- "memcached": pymemcache's `HashClient` with `ignore_exc` (an option Django's documentation
  shows): `add`, `set` and `delete` return False, `get` returns None;
- "raise": a backend that lets the error through (`ConnectionError`).

`OUTAGE.start(...)` names the operations that fail; the state is shared by every thread, so the
Django server thread of a round-trip test sees it too.
"""

import threading

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache

_MISSING = object()
_ANSWERS = {
    "swallow": {"add": None, "set": None, "delete": None, "get": _MISSING},
    "memcached": {"add": False, "set": False, "delete": False, "get": None},
}


class Outage:
    """Which cache operations fail, and how (one of "swallow", "memcached", "raise")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.operations: frozenset[str] = frozenset()
        self.mode = "swallow"
        self.failed: list[str] = []  # the operations that failed, in order

    def start(self, *operations: str, mode: str = "swallow") -> None:
        with self._lock:
            self.operations, self.mode = frozenset(operations), mode

    def end(self) -> None:
        with self._lock:
            self.operations = frozenset()

    def reset(self) -> None:
        with self._lock:
            self.operations, self.mode = frozenset(), "swallow"
            self.failed.clear()

    def answer(self, operation: str, default: object = None) -> object:
        """_MISSING when `operation` works; else what the failing cache answers (or raises)."""
        with self._lock:
            if operation not in self.operations:
                return _MISSING
            self.failed.append(operation)
            mode = self.mode
        if mode == "raise":
            raise ConnectionError(f"Error 111 connecting to 127.0.0.1:6399 during {operation}: Connection refused")
        answer = _ANSWERS[mode][operation]
        return default if answer is _MISSING else answer


OUTAGE = Outage()


class UnreliableCache(LocMemCache):
    """LocMemCache, except while `OUTAGE` names an operation."""

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        answer = OUTAGE.answer("add")
        return super().add(key, value, timeout, version) if answer is _MISSING else answer

    def get(self, key, default=None, version=None):
        answer = OUTAGE.answer("get", default)
        return super().get(key, default, version) if answer is _MISSING else answer

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        answer = OUTAGE.answer("set")
        return super().set(key, value, timeout, version) if answer is _MISSING else answer

    def delete(self, key, version=None):
        answer = OUTAGE.answer("delete")
        return super().delete(key, version) if answer is _MISSING else answer
