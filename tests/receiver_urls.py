"""A receiving Django project's URLs, for tests/test_receiver_toolkit.py (ROOT_URLCONF override).

Every view is behind `webhook_receiver.django.webhook_view` and records what it saw in `CALLS`.
"""

import threading

from django.http import HttpRequest, HttpResponse
from django.urls import path

from webhook_receiver.django import webhook_view

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwRnBxdWdSbzQ="
OLD_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

CALLS: list[tuple[str, str, dict]] = []  # (view name, request.webhook_id, request.webhook)
ATTEMPTS: dict[str, int] = {}  # webhook id -> times a flaky view was entered
_lock = threading.Lock()


def reset() -> None:
    with _lock:
        CALLS.clear()
        ATTEMPTS.clear()
    MEMORY_STORE.claimed.clear()
    MEMORY_STORE.log.clear()


def _record(name: str, request: HttpRequest) -> HttpResponse:
    with _lock:
        CALLS.append((name, request.webhook_id, request.webhook))
    return HttpResponse("ok")


def _enter(webhook_id: str) -> int:
    with _lock:
        ATTEMPTS[webhook_id] = ATTEMPTS.get(webhook_id, 0) + 1
        return ATTEMPTS[webhook_id]


class MemoryStore:
    """A dedupe store of one process, proving the protocol is pluggable."""

    def __init__(self) -> None:
        self.claimed: set[str] = set()
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def claim(self, webhook_id: str) -> bool:
        with self._lock:
            self.log.append(("claim", webhook_id))
            if webhook_id in self.claimed:
                return False
            self.claimed.add(webhook_id)
            return True

    def release(self, webhook_id: str) -> None:
        with self._lock:
            self.log.append(("release", webhook_id))
            self.claimed.discard(webhook_id)


MEMORY_STORE = MemoryStore()


@webhook_view(secret=SECRET)
def hook(request: HttpRequest) -> HttpResponse:
    return _record("hook", request)


@webhook_view(secret_setting="TEST_WEBHOOK_SECRET")
def hook_from_setting(request: HttpRequest) -> HttpResponse:
    return _record("setting", request)


@webhook_view(secret=lambda request: [SECRET, OLD_SECRET])  # rotation on the receiving side
def hook_rotating(request: HttpRequest) -> HttpResponse:
    return _record("rotating", request)


@webhook_view(secret=SECRET)
def flaky(request: HttpRequest) -> HttpResponse:
    """Raises the first time it sees a webhook id, then processes it."""
    if _enter(request.webhook_id) == 1:
        raise RuntimeError("database unavailable")
    return _record("flaky", request)


@webhook_view(secret=SECRET)
def busy(request: HttpRequest) -> HttpResponse:
    """Answers 503 the first time it sees a webhook id, then processes it."""
    if _enter(request.webhook_id) == 1:
        return HttpResponse("busy", status=503)
    return _record("busy", request)


@webhook_view(secret=SECRET, dedupe_store=MEMORY_STORE)
def hook_memory_store(request: HttpRequest) -> HttpResponse:
    return _record("memory", request)


@webhook_view(secret=SECRET, dedupe_store=False)
def hook_no_dedupe(request: HttpRequest) -> HttpResponse:
    return _record("no-dedupe", request)


urlpatterns = [
    path("hook/", hook),
    path("hook/setting/", hook_from_setting),
    path("hook/rotating/", hook_rotating),
    path("hook/flaky/", flaky),
    path("hook/busy/", busy),
    path("hook/memory/", hook_memory_store),
    path("hook/no-dedupe/", hook_no_dedupe),
]
