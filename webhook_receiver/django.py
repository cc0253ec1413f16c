"""A Django view decorator that verifies, deduplicates and hands over webhooks.

    from webhook_receiver.django import webhook_view

    @webhook_view(secret_setting="ORDERS_WEBHOOK_SECRET")
    def orders_webhook(request):
        handle(request.webhook["type"], request.webhook["data"])  # the verified JSON body
        return HttpResponse("ok")

The decorated view only runs for an authentic, fresh, first-seen webhook. Otherwise the
decorator answers by itself, in plain text:

- 400 for missing headers or a verified body that is not a JSON object;
- 401 for a signature that does not match (or is malformed) and a timestamp out of tolerance;
- 405 for anything but POST; 413 for a body over Django's DATA_UPLOAD_MAX_MEMORY_SIZE;
- 200 "duplicate" for a webhook id already processed, without calling the view, so the sender
  stops retrying it.

Deduplication claims the webhook id before calling the view, atomically (by default with
`cache.add` on Django's default cache, one key per view and id, kept 7 days; use a shared
cache such as Redis or Memcached when several processes receive). The claim is kept only
when the view returns a 2xx response. When the view raises, or answers anything else, the claim
is released so that the sender's retry is processed: a webhook counts as handled only once your
code said so. While one request for an id is being processed, a concurrent duplicate is
answered "duplicate" too: keep views quick (hand slow work to a queue), so that the sender
never times out and retries meanwhile.
"""

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from webhook_receiver import (
    DEFAULT_TOLERANCE,
    X_WEBHOOK_ID,
    InvalidSignatureError,
    TimestampOutsideToleranceError,
    WebhookVerificationError,
    verify_webhook,
)

__all__ = ["DEFAULT_DEDUPE_TIMEOUT", "CacheDedupeStore", "DedupeStore", "webhook_view"]

logger = logging.getLogger("webhook_receiver")

# The sender retries for about 3.2 days, each retry re-signed with a fresh timestamp: remember
# processed ids for longer than that.
DEFAULT_DEDUPE_TIMEOUT = 7 * 24 * 3600

SecretSource = str | Sequence[str] | Callable[[HttpRequest], str | Sequence[str]]


class DedupeStore(Protocol):
    def claim(self, webhook_id: str) -> bool:
        """Atomically mark `webhook_id` as being processed; False if it already was."""

    def release(self, webhook_id: str) -> None:
        """Forget `webhook_id`, so that the next delivery of it is processed."""


class CacheDedupeStore:
    """Deduplication in a Django cache: `cache.add` is atomic in every built-in backend.

    The per-process local-memory cache only deduplicates within one process, and the dummy
    cache not at all: receive with a shared cache (Redis, Memcached, database) in production.
    """

    def __init__(
        self, alias: str = "default", timeout: int = DEFAULT_DEDUPE_TIMEOUT, prefix: str = "webhook-receiver:"
    ) -> None:
        self.alias = alias
        self.timeout = timeout
        self.prefix = prefix

    def key(self, webhook_id: str) -> str:
        # Hashed: any id becomes a short key every backend accepts (memcached: no spaces, < 250).
        return self.prefix + hashlib.sha256(webhook_id.encode()).hexdigest()

    def claim(self, webhook_id: str) -> bool:
        return bool(caches[self.alias].add(self.key(webhook_id), 1, self.timeout))

    def release(self, webhook_id: str) -> None:
        caches[self.alias].delete(self.key(webhook_id))


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _status_for(error: WebhookVerificationError) -> int:
    if isinstance(error, InvalidSignatureError | TimestampOutsideToleranceError):
        return 401
    return 400  # MissingHeaderError, InvalidPayloadError


def webhook_view(
    *,
    secret: SecretSource | None = None,
    secret_setting: str | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    dedupe_store: DedupeStore | bool | None = None,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a view that receives webhooks.

    Give exactly one of `secret` (a string, a sequence of strings during a rotation, or a
    callable taking the request and returning either) and `secret_setting` (the name of a
    Django setting holding the same, read at each request). `dedupe_store` is anything with
    `claim(webhook_id) -> bool` and `release(webhook_id)`; None uses a `CacheDedupeStore` on the
    default cache, keyed per view (two views receiving the same event each process it); False
    turns deduplication off. The view sees `request.webhook` (the parsed JSON body) and
    `request.webhook_id`.
    """
    if (secret is None) == (secret_setting is None):
        raise ImproperlyConfigured("webhook_view needs exactly one of secret= and secret_setting=")

    def resolve_secret(request: HttpRequest) -> str | Sequence[str]:
        if secret_setting is not None:
            value = getattr(settings, secret_setting, None)
            if not value:
                raise ImproperlyConfigured(f"settings.{secret_setting} (the webhook secret) is not set")
            return value
        return secret(request) if callable(secret) else secret

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        if iscoroutinefunction(view):
            raise TypeError("webhook_view decorates synchronous views only")
        store: DedupeStore | None
        if dedupe_store is None or dedupe_store is True:
            # Per view: two endpoints of one receiver get the same event, and each must see it.
            store = CacheDedupeStore(prefix=f"webhook-receiver:{view.__module__}.{view.__qualname__}:")
        elif dedupe_store is False:
            store = None
        else:
            store = dedupe_store

        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            try:
                body = request.body
            except RequestDataTooBig:
                return _plain("request body too large", 413)
            try:
                webhook = verify_webhook(resolve_secret(request), request.headers, body, tolerance)
            except WebhookVerificationError as error:
                logger.warning("webhook rejected on %s: %s", request.path, error)
                return _plain(str(error), _status_for(error))

            if webhook.id is None:
                return _plain(f"missing {X_WEBHOOK_ID} header", 400)
            if store is not None and not store.claim(webhook.id):
                return _plain("duplicate", 200)
            request.webhook = webhook.payload
            request.webhook_id = webhook.id
            try:
                response = view(request, *args, **kwargs)
            except BaseException:
                _release(store, webhook.id)
                raise
            if store is not None and not 200 <= response.status_code < 300:
                _release(store, webhook.id)
            return response

        return wrapper

    return decorator


def _release(store: DedupeStore | None, webhook_id: str) -> None:
    if store is None:
        return
    try:
        store.release(webhook_id)
    except Exception:
        # The view's own outcome matters more; a claim that could not be released only turns
        # the sender's retry into "duplicate".
        logger.exception("could not release the dedupe claim of webhook %s", webhook_id)
