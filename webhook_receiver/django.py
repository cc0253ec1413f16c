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
  stops retrying it;
- 503 with `Retry-After` when another request is processing the same id right now, or when the
  dedupe store cannot say whether the id is new: the sender comes back later. A failing store
  never turns a webhook into a "duplicate", which would lose it.

Deduplication, step by step (the store contract is `DedupeStore`):

1. `claim(id)` reserves the id before the view runs. Only `True` runs the view; `False` means
   processed already (200 "duplicate"); `IN_PROGRESS` means another request holds it (503);
   anything else, or an exception, is a store failure (503, logged as a warning).
2. The view answers 2xx: `complete(id)`, when the store has it, turns the reservation into the
   lasting "processed" mark.
3. The view raises or answers anything else: `release(id)` forgets the reservation, so that the
   sender's retry is processed. A webhook counts as handled only once your code said so.

The default store, `CacheDedupeStore` on Django's default cache (one key per view and id), keeps
a reservation for `processing_timeout` (5 minutes) and the processed mark for 7 days. So a cache
failing at step 2 or 3 loses nothing: a reservation that could not be released expires, and the
sender's retries, answered 503 until then, are processed after it. A store with only `claim` and
`release` keeps `claim`'s mark for good: if its `release` fails, the id stays marked and the
retries are answered "duplicate"; that is logged as an error naming the id, to replay it. Use a
shared cache (Redis, Memcached, database) when several processes receive, and keep views well
under `processing_timeout` (hand slow work to a queue).
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
    signature_format,
    validate_tolerance,
    verify_webhook,
)

__all__ = [
    "DEFAULT_DEDUPE_TIMEOUT",
    "DEFAULT_PROCESSING_TIMEOUT",
    "IN_PROGRESS",
    "RETRY_AFTER",
    "CacheDedupeStore",
    "DedupeStore",
    "DedupeStoreError",
    "webhook_view",
]

logger = logging.getLogger("webhook_receiver")

# The sender retries for about 3.2 days, each retry re-signed with a fresh timestamp: remember
# processed ids for longer than that.
DEFAULT_DEDUPE_TIMEOUT = 7 * 24 * 3600
# How long a reservation lives when nothing completes or releases it (the process died, or the
# release failed): ten times our sender's request timeout (30 s), so no view the sender still
# waits for outlives it, and nothing against its ~3 days of retries, so a stuck reservation only
# delays a webhook.
DEFAULT_PROCESSING_TIMEOUT = 300
# Seconds, in the Retry-After of the 503 answers. Our sender waits at least this long (and at
# least its own backoff), so a store outage is not hammered with retries.
RETRY_AFTER = 30
# What `DedupeStore.claim` returns while another request holds the id.
IN_PROGRESS = "in-progress"

SecretSource = str | Sequence[str] | Callable[[HttpRequest], str | Sequence[str]]


class DedupeStoreError(Exception):
    """The dedupe store could not answer; the webhook is answered 503 and the sender retries."""


class DedupeStore(Protocol):
    """What `webhook_view(dedupe_store=...)` needs.

    A store may also have `complete(webhook_id)`, called after the view answered 2xx to turn the
    reservation into the lasting "processed" mark (raise, or return False, when it could not).
    With it, `claim` should reserve for a short while only, so that a reservation whose
    `release` failed expires instead of marking the id for good; `CacheDedupeStore` does this.
    """

    def claim(self, webhook_id: str) -> bool | str:
        """Atomically reserve `webhook_id` for this request.

        True: reserved (first seen): the view runs. False: processed already. IN_PROGRESS:
        another request holds it. Raise (or return anything else) when the store cannot tell:
        the request is answered 503, never "duplicate".
        """

    def release(self, webhook_id: str) -> bool | None:
        """Forget the reservation, so that the next delivery is processed; raise or return False
        when it could not (None, as earlier stores return, counts as done)."""


class CacheDedupeStore:
    """Deduplication in a Django cache: a reservation for `processing_timeout` seconds, made
    with `cache.add` (atomic in every built-in backend), then a processed mark for `timeout`.

    Only an explicit True from `add` is a reservation. Caches set to swallow errors answer None
    (django-redis with IGNORE_EXCEPTIONS) or False (pymemcache with `ignore_exc`), so a False is
    believed only when the mark it collided with can be read back. The per-process local-memory
    cache only deduplicates within one process, and the dummy cache not at all: receive with a
    shared cache (Redis, Memcached, database) in production.
    """

    PROCESSING = "processing"
    PROCESSED = 1  # also what earlier versions wrote for every claim: still read as processed

    def __init__(
        self,
        alias: str = "default",
        timeout: int = DEFAULT_DEDUPE_TIMEOUT,
        prefix: str = "webhook-receiver:",
        processing_timeout: int = DEFAULT_PROCESSING_TIMEOUT,
    ) -> None:
        self.alias = alias
        self.timeout = timeout
        self.prefix = prefix
        self.processing_timeout = processing_timeout

    def __repr__(self) -> str:
        return f"CacheDedupeStore(alias={self.alias!r}, prefix={self.prefix!r})"

    def key(self, webhook_id: str) -> str:
        # Hashed: any id becomes a short key every backend accepts (memcached: no spaces, < 250).
        return self.prefix + hashlib.sha256(webhook_id.encode()).hexdigest()

    def claim(self, webhook_id: str) -> bool | str:
        """True: reserved for this request; False: processed; IN_PROGRESS: reserved by another."""
        cache = caches[self.alias]
        key = self.key(webhook_id)
        added = cache.add(key, self.PROCESSING, self.processing_timeout)
        if added is True:
            return True
        if added is not False:
            raise DedupeStoreError(
                f"cache {self.alias!r}: add() returned {added!r:.40}, not True or False "
                "(a backend that swallows errors, such as django-redis with IGNORE_EXCEPTIONS, answers None)"
            )
        mark = cache.get(key)
        if mark == self.PROCESSING:
            return IN_PROGRESS
        if mark == self.PROCESSED:
            return False
        if mark is None:
            raise DedupeStoreError(
                f"cache {self.alias!r}: add() found the id taken but get() finds no mark (a backend that "
                "swallows errors, such as pymemcache with ignore_exc, answers False and None; or the mark "
                "expired meanwhile)"
            )
        raise DedupeStoreError(f"cache {self.alias!r}: unexpected dedupe mark {mark!r:.40}")

    def complete(self, webhook_id: str) -> None:
        """Mark `webhook_id` processed, for `timeout` seconds."""
        caches[self.alias].set(self.key(webhook_id), self.PROCESSED, self.timeout)

    def release(self, webhook_id: str) -> None:
        """Forget the reservation; raise `DedupeStoreError` when the cache says it failed."""
        deleted = caches[self.alias].delete(self.key(webhook_id))
        if deleted is not True and deleted is not False:  # False: no such key, nothing to forget
            raise DedupeStoreError(
                f"cache {self.alias!r}: delete() returned {deleted!r:.40}, not True or False "
                "(a backend that swallows errors answers None)"
            )


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _status_for(error: WebhookVerificationError) -> int:
    if isinstance(error, InvalidSignatureError | TimestampOutsideToleranceError):
        return 401
    return 400  # MissingHeaderError, InvalidPayloadError


def _retry_later(text: str) -> HttpResponse:
    response = _plain(text, 503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:300]}"


def webhook_view(
    *,
    secret: SecretSource | None = None,
    secret_setting: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    dedupe_store: DedupeStore | bool | None = None,
    scheme: str | None = None,
    header: str | None = None,
    encoding: str | None = None,
    prefix: str | None = None,
    preset: str | None = None,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a view that receives webhooks.

    Give exactly one of `secret` (a string, a sequence of strings during a rotation, or a
    callable taking the request and returning either) and `secret_setting` (the name of a
    Django setting holding the same, read at each request). `tolerance` is in seconds, from 0 to
    one day (`ValueError` otherwise). `dedupe_store` is a `DedupeStore`; None uses a
    `CacheDedupeStore` on the default cache, keyed per view (two views receiving the same event
    each process it); False turns deduplication off. The view sees `request.webhook` (the parsed
    JSON body) and `request.webhook_id`.

    The signature format is chosen as in `webhook_receiver.verify`: `preset=` (`standard`,
    `github`, `shopify`, `stripe`), or `scheme=` with `header=`, `encoding=`, `prefix=`; neither
    tells Standard Webhooks and timestamped_hex apart by their headers. A format that does not
    exist raises `ValueError` here, when the view is decorated. body_hmac signs no timestamp:
    a replayed request is only caught by deduplication, while its id is remembered (7 days).
    """
    if (secret is None) == (secret_setting is None):
        raise ImproperlyConfigured("webhook_view needs exactly one of secret= and secret_setting=")
    validate_tolerance(tolerance)
    signature_options = {"scheme": scheme, "header": header, "encoding": encoding, "prefix": prefix, "preset": preset}
    signature_format(**signature_options)  # a ValueError now rather than at the first request

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
                webhook = verify_webhook(resolve_secret(request), request.headers, body, tolerance, **signature_options)
            except WebhookVerificationError as error:
                logger.warning("webhook rejected on %s: %s", request.path, error)
                return _plain(str(error), _status_for(error))

            if webhook.id is None:
                return _plain(f"missing {X_WEBHOOK_ID} header", 400)
            request.webhook = webhook.payload
            request.webhook_id = webhook.id
            if store is None:
                return view(request, *args, **kwargs)
            refused = _claim(store, webhook.id, request.path)
            if refused is not None:
                return refused
            try:
                response = view(request, *args, **kwargs)
            except BaseException:
                _release(store, webhook.id, request.path)
                raise
            if 200 <= response.status_code < 300:
                _complete(store, webhook.id, request.path)
            else:
                _release(store, webhook.id, request.path)
            return response

        return wrapper

    return decorator


def _claim(store: DedupeStore, webhook_id: str, path: str) -> HttpResponse | None:
    """None when `webhook_id` is reserved for this request; otherwise the answer to give."""
    try:
        claimed = store.claim(webhook_id)
    except Exception as error:
        problem = _describe(error)
    else:
        if claimed is True:
            return None
        if claimed is False:
            return _plain("duplicate", 200)
        if isinstance(claimed, str) and claimed == IN_PROGRESS:
            logger.info("webhook %s on %s is being processed by another request: answered 503", webhook_id, path)
            return _retry_later("this webhook is being processed by another request; retry later")
        problem = f"claim() returned {claimed!r:.60}, not True, False or IN_PROGRESS"
    logger.warning(
        "webhook %s on %s not processed, answered 503 so that the sender retries: the dedupe store %s "
        "could not claim it (%s)",
        webhook_id,
        path,
        type(store).__qualname__,
        problem,
    )
    return _retry_later("deduplication store unavailable; retry later")


def _complete(store: DedupeStore, webhook_id: str, path: str) -> None:
    complete = getattr(store, "complete", None)
    if complete is None:
        return  # a store without complete(): the claim is the lasting mark
    try:
        problem = "it returned False" if complete(webhook_id) is False else None
    except Exception as error:
        problem = _describe(error)
    if problem is not None:
        # The view has done its work: the answer stays 2xx. Only a redelivery after the
        # reservation expires would run the view again.
        logger.warning(
            "could not mark webhook %s on %s as processed in %s (%s): a redelivery after its reservation "
            "expires would be processed again",
            webhook_id,
            path,
            type(store).__qualname__,
            problem,
        )


def _release(store: DedupeStore, webhook_id: str, path: str) -> None:
    """Forget the reservation after the view failed; a failure is logged, never raised: the
    view's own outcome (an exception, or its non-2xx answer) is what the sender gets."""
    try:
        problem = "it returned False" if store.release(webhook_id) is False else None
    except Exception as error:
        problem = _describe(error)
    if problem is None:
        return
    if callable(getattr(store, "complete", None)):
        logger.warning(
            "could not release the dedupe claim of webhook %s on %s in %s (%s): it expires on its own; the "
            "sender's retries are answered 503 until then, and processed after",
            webhook_id,
            path,
            type(store).__qualname__,
            problem,
        )
    else:
        logger.error(
            "could not release the dedupe claim of webhook %s on %s in %s (%s): the id stays marked as "
            'processed, so the sender\'s retries are answered "duplicate"; replay it once the store works, '
            "or give the store a complete() method and a short-lived claim",
            webhook_id,
            path,
            type(store).__qualname__,
            problem,
        )
