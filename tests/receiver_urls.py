"""A receiving Django project's URLs, for tests/test_receiver_toolkit.py (ROOT_URLCONF override).

Every view is behind `webhook_receiver.django.webhook_view` and records what it saw in `CALLS`.
"""

import threading

from django.http import HttpRequest, HttpResponse
from django.urls import path

from webhook_receiver.django import CacheDedupeStore, webhook_view

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
    SCRIPTED_STORE.__init__()
    SLOW_ENTERED.clear()
    SLOW_PROCEED.clear()


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


class ScriptedStore:
    """A dedupe store that answers what the test says: `claim_answer` and `release_answer` are
    returned, or raised when they are exceptions."""

    def __init__(self) -> None:
        self.claim_answer: object = True
        self.release_answer: object = None
        self.log: list[tuple[str, str]] = []

    def _answer(self, operation: str, webhook_id: str, answer: object) -> object:
        self.log.append((operation, webhook_id))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def claim(self, webhook_id: str) -> object:
        return self._answer("claim", webhook_id, self.claim_answer)

    def release(self, webhook_id: str) -> object:
        return self._answer("release", webhook_id, self.release_answer)


SCRIPTED_STORE = ScriptedStore()
# The default store, but a claim that outlives a failed release expires after 1 s, not 5 minutes.
QUICK_EXPIRY_STORE = CacheDedupeStore(prefix="webhook-receiver:quick-expiry:", processing_timeout=1)
SLOW_ENTERED = threading.Event()  # the slow view is running
SLOW_PROCEED = threading.Event()  # ... and may finish


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


@webhook_view(secret=SECRET, dedupe_store=SCRIPTED_STORE)
def hook_scripted_store(request: HttpRequest) -> HttpResponse:
    return _record("scripted", request)


@webhook_view(secret=SECRET, dedupe_store=SCRIPTED_STORE)
def busy_scripted_store(request: HttpRequest) -> HttpResponse:
    """Answers 503 the first time it sees a webhook id, then processes it."""
    if _enter(request.webhook_id) == 1:
        return HttpResponse("busy", status=503)
    return _record("busy-scripted", request)


@webhook_view(secret=SECRET, dedupe_store=QUICK_EXPIRY_STORE)
def flaky_quick_expiry(request: HttpRequest) -> HttpResponse:
    """Raises the first time it sees a webhook id, then processes it."""
    if _enter(request.webhook_id) == 1:
        raise RuntimeError("database unavailable")
    return _record("flaky-quick", request)


@webhook_view(secret=SECRET)
def slow(request: HttpRequest) -> HttpResponse:
    """Holds the request until the test sets SLOW_PROCEED."""
    SLOW_ENTERED.set()
    if not SLOW_PROCEED.wait(timeout=30):
        return HttpResponse("not released by the test", status=500)
    return _record("slow", request)


# One view per signature format our sender signs in (tests/test_receiver_formats.py).
@webhook_view(secret=SECRET, preset="github")
def hook_github(request: HttpRequest) -> HttpResponse:
    return _record("github", request)


@webhook_view(secret=SECRET, preset="shopify")
def hook_shopify(request: HttpRequest) -> HttpResponse:
    return _record("shopify", request)


@webhook_view(secret=SECRET, preset="stripe")
def hook_stripe(request: HttpRequest) -> HttpResponse:
    return _record("stripe", request)


@webhook_view(secret=SECRET, scheme="body_hmac")  # plain: X-Webhook-Signature: <hex>
def hook_plain(request: HttpRequest) -> HttpResponse:
    return _record("plain", request)


@webhook_view(secret=SECRET, preset="standard")
def hook_standard(request: HttpRequest) -> HttpResponse:
    return _record("standard", request)


urlpatterns = [
    path("hook/", hook),
    path("hook/setting/", hook_from_setting),
    path("hook/rotating/", hook_rotating),
    path("hook/flaky/", flaky),
    path("hook/busy/", busy),
    path("hook/memory/", hook_memory_store),
    path("hook/no-dedupe/", hook_no_dedupe),
    path("hook/scripted/", hook_scripted_store),
    path("hook/busy-scripted/", busy_scripted_store),
    path("hook/flaky-quick/", flaky_quick_expiry),
    path("hook/slow/", slow),
    path("hook/github/", hook_github),
    path("hook/shopify/", hook_shopify),
    path("hook/stripe/", hook_stripe),
    path("hook/plain/", hook_plain),
    path("hook/standard/", hook_standard),
]
