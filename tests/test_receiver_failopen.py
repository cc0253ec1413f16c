"""The receiver toolkit never fails open (issue 11, finding 3).

A dedupe store that cannot say "first seen" never turns a webhook into a "duplicate": the
sender is asked to come back (503 with Retry-After) and the view does not run. A failed
release never leaves the id marked for good. A `tolerance` that is not a sane number of seconds
is a programming error, never a way to accept a stale request. The receiving views
(tests/receiver_urls.py) are called through Django's test client and, for the round trip, by our
real sender over HTTP; every request is signed by our sender's signing code.
"""

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.test import Client

from deliveries import publish
from deliveries.models import DeliveryAttempt, DeliveryStatus
from deliveries.signing import signature_headers
from endpoints.models import Endpoint, SignatureScheme
from tests import receiver_urls
from tests.conftest import wait_until
from tests.django_server import serving_django
from tests.receiver_urls import SECRET
from tests.unreliable_cache import OUTAGE
from webhook_receiver import verify, verify_webhook
from webhook_receiver.django import webhook_view

DAY = 24 * 3600


def signed(body: bytes, webhook_id: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers exactly as our sender signs them (each retry is re-signed with a fresh timestamp)."""
    when = int(time.time()) if timestamp is None else timestamp
    return signature_headers(SignatureScheme.STANDARD, [SECRET], webhook_id, when, body)


def body_for(webhook_id: str) -> bytes:
    return json.dumps({"id": webhook_id, "type": "order.paid", "data": {"order": 1}}).encode()


def post(client: Client, path: str, webhook_id: str):
    body = body_for(webhook_id)
    return client.post(path, data=body, content_type="application/json", headers=signed(body, webhook_id))


def assert_retry_later(response) -> None:
    assert response.status_code == 503, (response.status_code, response.content)
    assert int(response["Retry-After"]) > 0


@pytest.fixture
def receiving_project(settings) -> Iterator[None]:
    """This process as a receiving Django project whose default cache can be made to fail."""
    settings.ROOT_URLCONF = "tests.receiver_urls"
    settings.CACHES = {
        "default": {"BACKEND": "tests.unreliable_cache.UnreliableCache", "LOCATION": f"failopen-{time.time_ns()}"}
    }
    settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
    receiver_urls.reset()
    OUTAGE.reset()
    yield
    OUTAGE.reset()
    receiver_urls.SLOW_PROCEED.set()
    receiver_urls.reset()


@pytest.fixture
def receiver_client(receiving_project) -> Client:
    return Client(enforce_csrf_checks=True, raise_request_exception=False)


@pytest.fixture
def store_warnings(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="webhook_receiver")
    return caplog


# --- the store cannot say "first seen" ------------------------------------------------------------


@pytest.mark.parametrize(
    ("operations", "mode", "named"),
    [
        (["add"], "swallow", "add() returned None"),  # django-redis with IGNORE_EXCEPTIONS
        (["add", "get"], "memcached", "no mark"),  # pymemcache with ignore_exc: add() False, get() None
        (["add"], "raise", "ConnectionError"),
    ],
    ids=["swallowed", "memcached-ignore-exc", "raised"],
)
def test_a_failing_cache_gets_503_and_the_view_does_not_run(receiver_client, store_warnings, operations, mode, named):
    # Given the default cache's server is gone
    OUTAGE.start(*operations, mode=mode)

    # When a webhook arrives, it is neither processed nor called a duplicate: the sender retries
    assert_retry_later(post(receiver_client, "/hook/", "evt_down"))
    assert receiver_urls.CALLS == []
    [warning] = [r for r in store_warnings.records if r.name == "webhook_receiver"]
    assert warning.levelno == logging.WARNING
    assert named in warning.getMessage() and "evt_down" in warning.getMessage()
    assert SECRET not in store_warnings.text

    # And once the cache is back, the sender's retry is processed
    OUTAGE.end()
    response = post(receiver_client, "/hook/", "evt_down")
    assert (response.status_code, response.content) == (200, b"ok")
    assert [call[:2] for call in receiver_urls.CALLS] == [("hook", "evt_down")]


@pytest.mark.parametrize(
    "answer",
    [None, 1, 0, "", "True", [], ConnectionError("Error 111 connecting to 127.0.0.1:6399"), TimeoutError()],
    ids=repr,
)
def test_a_store_claim_that_is_not_true_or_false_gets_503_and_the_view_does_not_run(
    receiver_client, store_warnings, answer
):
    receiver_urls.SCRIPTED_STORE.claim_answer = answer
    assert_retry_later(post(receiver_client, "/hook/scripted/", "evt_odd"))
    assert receiver_urls.CALLS == []
    [warning] = [r for r in store_warnings.records if r.name == "webhook_receiver"]
    assert warning.levelno == logging.WARNING and "evt_odd" in warning.getMessage()

    # an explicit False is a duplicate, an explicit True runs the view
    receiver_urls.SCRIPTED_STORE.claim_answer = False
    assert post(receiver_client, "/hook/scripted/", "evt_odd").content == b"duplicate"
    receiver_urls.SCRIPTED_STORE.claim_answer = True
    assert post(receiver_client, "/hook/scripted/", "evt_odd").content == b"ok"
    assert [call[:2] for call in receiver_urls.CALLS] == [("scripted", "evt_odd")]


def test_a_retry_while_the_first_request_is_still_running_is_503_not_duplicate(receiver_client):
    # Given a first request for an id whose view is still running (the sender timed out and retried)
    first: list = []
    thread = threading.Thread(target=lambda: first.append(post(receiver_client, "/hook/slow/", "evt_slow")))
    thread.start()
    assert receiver_urls.SLOW_ENTERED.wait(timeout=10)

    # When the retry arrives meanwhile, it is asked to come back: the first may still fail
    assert_retry_later(post(Client(), "/hook/slow/", "evt_slow"))

    # Then the first finishes, and only now is the id a duplicate
    receiver_urls.SLOW_PROCEED.set()
    thread.join(timeout=10)
    assert (first[0].status_code, first[0].content) == (200, b"ok")
    assert post(receiver_client, "/hook/slow/", "evt_slow").content == b"duplicate"
    assert [call[:2] for call in receiver_urls.CALLS] == [("slow", "evt_slow")]


# --- the release after a failed view fails ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["swallow", "raise"])
def test_when_the_release_fails_the_senders_retry_is_processed_not_answered_duplicate(
    receiver_client, store_warnings, mode
):
    # Given a view that fails the first time, and a cache that cannot delete the claim then
    OUTAGE.start("delete", mode=mode)
    assert post(receiver_client, "/hook/flaky-quick/", "evt_rel").status_code == 500
    assert OUTAGE.failed == ["delete"]
    OUTAGE.end()

    # When the sender retries, it is asked to come back until the claim expires (1 s for this
    # view's store), and then processed: never answered "duplicate"
    answers = []

    def processed() -> bool:
        response = post(receiver_client, "/hook/flaky-quick/", "evt_rel")
        answers.append((response.status_code, response.content))
        return response.status_code != 503

    wait_until(processed, timeout=15, interval=0.1, what="the retry processed")
    assert answers[-1] == (200, b"ok"), answers
    assert [call[:2] for call in receiver_urls.CALLS] == [("flaky-quick", "evt_rel")]
    assert post(receiver_client, "/hook/flaky-quick/", "evt_rel").content == b"duplicate"
    # and the failed release was logged, naming the problem, never the secret
    [warning] = [r for r in store_warnings.records if r.name == "webhook_receiver" and r.levelno >= logging.WARNING]
    assert "could not release" in warning.getMessage() and "evt_rel" in warning.getMessage()
    assert SECRET not in store_warnings.text


@pytest.mark.parametrize("answer", [False, ConnectionError("Error 111")], ids=repr)
def test_a_failed_release_is_logged_and_never_turns_a_failed_view_into_a_2xx(receiver_client, store_warnings, answer):
    # A store with only claim() and release(): its claim is the permanent mark, so a failed
    # release leaves the id marked; the response stays the view's 503, and an error says so.
    receiver_urls.SCRIPTED_STORE.release_answer = answer
    response = post(receiver_client, "/hook/busy-scripted/", "evt_busy")
    assert (response.status_code, response.content) == (503, b"busy")
    assert receiver_urls.SCRIPTED_STORE.log == [("claim", "evt_busy"), ("release", "evt_busy")]
    [error] = [r for r in store_warnings.records if r.name == "webhook_receiver" and r.levelno >= logging.ERROR]
    assert "evt_busy" in error.getMessage() and "stays marked" in error.getMessage()


# --- tolerance is a sane number of seconds ------------------------------------------------------------


@pytest.mark.parametrize(
    "tolerance",
    [math.nan, math.inf, -math.inf, 10**400, -(10**400), -1, -0.5, True, False, "300", None, Decimal(300), DAY + 1],
    ids=lambda value: repr(value)[:12],
)
def test_a_tolerance_that_is_not_a_sane_number_of_seconds_is_a_programming_error(tolerance):
    headers = signed(body_for("evt_t"), "evt_t")
    for check in (verify, verify_webhook):
        with pytest.raises(ValueError, match="tolerance must be"):
            check(SECRET, headers, body_for("evt_t"), tolerance)
    with pytest.raises(ValueError, match="tolerance must be"):
        webhook_view(secret=SECRET, tolerance=tolerance)


def test_an_eleven_day_old_request_is_never_accepted_with_a_nan_or_infinite_tolerance_or_clock():
    signed_at = 1_800_000_000
    headers = signed(body_for("evt_old"), "evt_old", timestamp=signed_at)
    for tolerance, now in [(math.nan, signed_at + 11 * DAY), (math.inf, signed_at + 11 * DAY), (300, math.nan)]:
        with pytest.raises(ValueError):
            verify(SECRET, headers, body_for("evt_old"), tolerance, now=now)


def test_tolerance_goes_up_to_one_day():
    signed_at = 1_800_000_000
    headers = signed(body_for("evt_day"), "evt_day", timestamp=signed_at)
    assert verify(SECRET, headers, body_for("evt_day"), DAY, now=signed_at + DAY)["id"] == "evt_day"
    assert verify(SECRET, headers, body_for("evt_day"), 0.5, now=signed_at)["id"] == "evt_day"
    webhook_view(secret=SECRET, tolerance=DAY)
    with pytest.raises(ValueError, match="tolerance must be"):
        verify(SECRET, headers, body_for("evt_day"), DAY + 0.5, now=signed_at)


# --- the round trip: our sender comes back after the 503 -----------------------------------------------


@pytest.fixture
def django_receiver(receiving_project) -> Iterator[str]:
    """This Django project serving tests/receiver_urls.py over real HTTP on 127.0.0.1."""
    with serving_django() as url:
        yield url


@pytest.mark.django_db(transaction=True)
def test_our_sender_retries_the_503_and_delivers_once_the_store_recovers(celery_worker, django_receiver, settings):
    # Given a receiver whose cache swallows errors (add() answers None), and quick retries
    # (the receiver's Retry-After capped at 1 s by the sender's WEBHOOKS_MAX_RETRY_AFTER)
    settings.WEBHOOKS_RETRY_SCHEDULE = "1,1,1,1,1,1"
    settings.WEBHOOKS_MAX_RETRY_AFTER = 1
    OUTAGE.start("add")
    Endpoint.objects.create(url=f"{django_receiver}/hook/", secret=SECRET)

    # When an event is published, the first attempt is answered 503 and the view does not run
    event = publish("order.paid", {"order": 11})

    def statuses() -> list[int | None]:
        attempts = DeliveryAttempt.objects.filter(delivery__event=event).order_by("number")
        return list(attempts.values_list("response_status", flat=True))

    wait_until(lambda: 503 in statuses(), timeout=20, what="an attempt answered 503")
    assert receiver_urls.CALLS == []

    # Then, once the cache is back, the sender's retry is processed: delivered, the view ran once
    OUTAGE.end()
    delivery = wait_until(
        lambda: event.deliveries.exclude(status=DeliveryStatus.PENDING).first(), timeout=20, what="delivery finished"
    )
    assert delivery.status == DeliveryStatus.SUCCEEDED, statuses()
    assert statuses()[-1] == 200 and set(statuses()[:-1]) == {503}, statuses()
    assert [call[:2] for call in receiver_urls.CALLS] == [("hook", event.webhook_id)]
    assert receiver_urls.CALLS[0][2]["data"] == {"order": 11}
