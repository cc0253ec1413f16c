"""Failure handling end to end: retries, timeouts, final answers, the sweep and the claim, on
PostgreSQL, Redis, a real worker and a real receiver on 127.0.0.1."""

import itertools
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from deliveries import publish
from deliveries.fanout import fan_out
from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.sending import SendOutcome, send_delivery
from deliveries.tasks import sweep_due_task
from endpoints.models import Endpoint
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SLACK = 0.7  # seconds a retry may arrive late: worker timer, task start-up, the HTTP round trip


def finished(event: Event) -> Callable[[], Delivery | None]:
    """A predicate returning the event's only delivery once it is no longer pending."""

    def check():
        delivery = event.deliveries.first()
        return delivery if delivery is not None and delivery.status != DeliveryStatus.PENDING else None

    return check


def attempted(event: Event, count: int) -> Callable[[], Delivery | None]:
    """A predicate returning the event's only delivery once `count` attempts are recorded and
    no sender holds it any more."""

    def check():
        delivery = event.deliveries.first()
        if delivery is None or delivery.attempt_count < count or delivery.locked_until is not None:
            return None
        return delivery

    return check


def attempts_of(delivery: Delivery) -> list[tuple[int, int | None, str, str]]:
    return [(a.number, a.response_status, a.error_class, a.outcome) for a in delivery.attempts.order_by("number")]


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stall_then_ok(seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer that waits `seconds` before sending anything, then 200 (if anyone still listens)."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        time.sleep(seconds)
        try:
            handler.send_response(200)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:
            pass

    return answer


def trickle_body(
    interval: float = 0.2, for_at_most: float = 3.0, gzip: bool = False
) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer with a prompt status line and headers promising a big body, which then comes
    one byte every `interval` seconds, for at most `for_at_most` seconds. With `gzip`, the body
    is a gzip stream of empty deflate blocks: bytes keep coming, but never any content."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.send_response(200)
            handler.send_header("Content-Length", "1000000")
            if gzip:
                handler.send_header("Content-Encoding", "gzip")
            handler.end_headers()
            if gzip:
                handler.wfile.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip header
            stop = time.monotonic() + for_at_most
            while time.monotonic() < stop:
                # gzip: an empty, non-final stored deflate block, which decodes to nothing
                handler.wfile.write(b"\x00\x00\x00\xff\xff" if gzip else b"x")
                time.sleep(interval)
        except OSError:
            pass  # the sender hung up, as it should

    return answer


def trickle_headers(interval: float = 0.2, for_at_most: float = 3.0) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer whose status line comes at once and whose header block then comes one byte
    every `interval` seconds, for at most `for_at_most` seconds."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            stop = time.monotonic() + for_at_most
            while time.monotonic() < stop:
                handler.wfile.write(b"a")
                time.sleep(interval)
            handler.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass  # the sender hung up, as it should

    return answer


def broker_idle() -> bool:
    """No message waiting in any queue and none held unacknowledged (countdowns included)."""
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    queued = sum(client.llen(key) for key in client.scan_iter() if client.type(key) == b"list")
    return queued == 0 and client.hlen("unacked") == 0


def test_server_errors_are_retried_on_schedule_until_success(celery_worker, receiver, settings):
    # Given an endpoint that answers 500 twice, then 200, and retries 1 s then 2 s apart (±20 %)
    settings.WEBHOOKS_RETRY_SCHEDULE = "1,2"
    settings.WEBHOOKS_RETRY_JITTER = 0.2
    receiver.script("/hook", [(500, {}, b"boom"), (500, {}, b"boom"), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 1})

    # Then it is delivered on the third attempt, the retries spaced as the schedule says
    delivery = wait_until(finished(event), timeout=15)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 3
    assert delivery.last_status_code == 200
    assert delivery.last_error == ""
    assert delivery.next_attempt_at is None
    assert attempts_of(delivery) == [(1, 500, "", "retry"), (2, 500, "", "retry"), (3, 200, "", "succeeded")]
    assert [a.response_body for a in delivery.attempts.order_by("number")] == ["boom", "boom", "ok"]
    requests = receiver.received("/hook")
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1  # the same webhook id every time
    gap1 = requests[1].received_at - requests[0].received_at
    gap2 = requests[2].received_at - requests[1].received_at
    assert 0.8 <= gap1 <= 1.2 + SLACK, gap1
    assert 1.6 <= gap2 <= 2.4 + SLACK, gap2


def test_connection_refused_is_retried_then_fails_when_retries_run_out(celery_worker, settings):
    # Given an endpoint on a loopback port where nothing listens, and two quick retries
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5,0.5"
    Endpoint.objects.create(url=f"http://127.0.0.1:{free_port()}/hook")

    # When an event is published
    event = publish("order.paid", {"order": 2})

    # Then three attempts each fail to connect, and the delivery is dead-lettered
    delivery = wait_until(finished(event), timeout=15)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == 3
    assert attempts_of(delivery) == [
        (1, None, "ConnectionError", "retry"),
        (2, None, "ConnectionError", "retry"),
        (3, None, "ConnectionError", "failed"),
    ]
    assert delivery.last_status_code is None
    assert delivery.last_error.startswith("ConnectionError: ")
    assert delivery.last_error.endswith("(gave up after 3 attempts)")
    assert delivery.next_attempt_at is None
    assert delivery.queued_until is None
    # and the retries waited (0.5 s - 20 % jitter at least) between attempts
    starts = [a.started_at for a in delivery.attempts.order_by("number")]
    assert all(later - earlier >= timedelta(seconds=0.4) for earlier, later in itertools.pairwise(starts))


def test_no_response_within_the_timeout_is_recorded_and_retried_later(celery_worker, receiver, settings):
    # Given a 1 s request timeout, a next retry 30 s away, and a receiver that stalls 2.5 s
    settings.WEBHOOKS_REQUEST_TIMEOUT = 1.0
    settings.WEBHOOKS_RETRY_SCHEDULE = "30"
    receiver.script("/hook", [stall_then_ok(2.5)])
    Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 3})

    # Then the attempt gives up after the timeout with a timeout error, and the delivery waits
    # for its next attempt
    delivery = wait_until(attempted(event, 1), timeout=10)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.attempt_count == 1
    [attempt] = delivery.attempts.all()
    assert (attempt.response_status, attempt.error_class, attempt.outcome) == (None, "ReadTimeout", "retry")
    assert attempt.error_message == "no complete response within 1 s"
    assert 900 <= attempt.duration_ms < 2000
    assert delivery.last_status_code is None
    assert delivery.last_error == "ReadTimeout: no complete response within 1 s"
    assert timezone.now() + timedelta(seconds=20) < delivery.next_attempt_at
    assert delivery.next_attempt_at < timezone.now() + timedelta(seconds=37)
    assert len(receiver.received("/hook")) == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(trickle_body(), id="body"),
        pytest.param(trickle_body(gzip=True), id="gzip-body"),
        pytest.param(trickle_headers(), id="headers"),
    ],
)
def test_trickled_response_is_cut_off_at_the_total_deadline(celery_worker, receiver, settings, answer):
    # Given a 1 s request timeout and a receiver that starts answering at once, then trickles
    # the rest of its headers or its (plain or gzip) body one byte every 0.2 s, for 3 s
    settings.WEBHOOKS_REQUEST_TIMEOUT = 1.0
    settings.WEBHOOKS_RETRY_SCHEDULE = "30"
    receiver.script("/hook", [answer])
    Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 4})

    # Then the attempt ends at the deadline, not when the trickle stops
    delivery = wait_until(attempted(event, 1), timeout=10)
    [attempt] = delivery.attempts.all()
    assert (attempt.response_status, attempt.error_class, attempt.outcome) == (None, "DeadlineExceeded", "retry")
    assert 1000 <= attempt.duration_ms < 2500
    assert attempt.error_message == "no complete response within 1 s"
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.attempt_count == 1
    assert delivery.last_error == "DeadlineExceeded: no complete response within 1 s"
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=20)


def test_redirect_is_not_followed_and_fails_at_once(celery_worker, receiver, settings):
    # Given an endpoint that redirects to another path of the same receiver
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5,0.5"
    receiver.script("/hook", [(302, {"Location": receiver.url("/elsewhere")}, b"")])
    Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 5})

    # Then the redirect is not followed, nor retried: the delivery fails after one attempt
    delivery = wait_until(finished(event), timeout=10)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == 1
    assert delivery.last_status_code == 302
    assert delivery.last_error == "HTTP 302"
    assert delivery.next_attempt_at is None
    assert attempts_of(delivery) == [(1, 302, "", "failed")]
    assert receiver.received("/elsewhere") == []
    assert len(receiver.received("/hook")) == 1


def test_client_error_fails_at_once_without_retry(celery_worker, receiver, settings):
    # Given an endpoint that answers 400 and quick retries that could be used
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5,0.5"
    receiver.script("/hook", [(400, {}, b"bad request")])
    Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 6})

    # Then it fails after one attempt: a 400 is the receiver's final answer
    delivery = wait_until(finished(event), timeout=10)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == 1
    assert delivery.last_status_code == 400
    assert delivery.last_error == "HTTP 400"
    assert delivery.next_attempt_at is None
    assert delivery.queued_until is None
    assert attempts_of(delivery) == [(1, 400, "", "failed")]
    assert delivery.attempts.get().response_body == "bad request"
    assert len(receiver.received("/hook")) == 1


def test_gone_fails_at_once_and_disables_the_endpoint(celery_worker, receiver, settings):
    # Given an endpoint that answers 410 Gone
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5,0.5"
    receiver.script("/hook", [(410, {}, b"")])
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 7})

    # Then the delivery fails after one attempt and the endpoint is disabled, saying why
    delivery = wait_until(finished(event), timeout=10)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == 1
    assert delivery.last_status_code == 410
    assert delivery.last_error == "HTTP 410"
    assert delivery.next_attempt_at is None
    assert attempts_of(delivery) == [(1, 410, "", "gone")]
    endpoint.refresh_from_db()
    assert endpoint.is_active is False
    assert "410" in endpoint.disabled_reason
    assert endpoint.disabled_at is not None
    assert len(receiver.received("/hook")) == 1


def test_retry_after_lengthens_the_wait(celery_worker, receiver, settings):
    # Given a schedule of 0.5 s and a receiver that first answers 429 with Retry-After: 2
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5"
    receiver.script("/hook", [(429, {"Retry-After": "2"}, b"slow down"), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 8})

    # Then the second attempt waits the 2 s asked for, and succeeds
    delivery = wait_until(finished(event), timeout=10)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 2
    assert delivery.last_error == ""
    assert delivery.next_attempt_at is None
    assert attempts_of(delivery) == [(1, 429, "", "retry"), (2, 200, "", "succeeded")]
    first, second = receiver.received("/hook")
    assert 2.0 <= second.received_at - first.received_at <= 2.0 + SLACK


def test_long_wait_is_left_to_the_sweep_and_not_sent_early(celery_worker, receiver, settings):
    # Given retries longer than the broker may hold (1 s wait, 0.5 s max countdown) and a
    # receiver that answers 503 first
    settings.WEBHOOKS_MAX_COUNTDOWN = 0.5
    settings.WEBHOOKS_RETRY_SCHEDULE = "1"
    receiver.script("/hook", [(503, {}, b""), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"))
    event = publish("order.paid", {"order": 9})

    # When the first attempt fails
    delivery = wait_until(attempted(event, 1), timeout=10)

    # Then the next attempt lives only in the database: no broker message waits for it
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.queued_until is None
    assert attempts_of(delivery) == [(1, 503, "", "retry")]
    wait_until(broker_idle, timeout=5)
    # and a sweep before it is due enqueues nothing
    assert timezone.now() < delivery.next_attempt_at
    assert sweep_due_task() == {"deliveries": 0, "events": 0, "released": 0}
    assert timezone.now() < delivery.next_attempt_at

    # When it is due, nothing sends it by itself...
    time.sleep(max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds()) + 0.3)
    assert len(receiver.received("/hook")) == 1
    assert Delivery.objects.get(pk=delivery.pk).attempt_count == 1

    # ...until the sweep enqueues it, and then it succeeds
    assert sweep_due_task() == {"deliveries": 1, "events": 0, "released": 0}
    delivery = wait_until(finished(event), timeout=10)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 2
    assert delivery.next_attempt_at is None
    assert delivery.queued_until is None
    assert attempts_of(delivery) == [(1, 503, "", "retry"), (2, 200, "", "succeeded")]
    assert len(receiver.received("/hook")) == 2


def test_concurrent_sends_of_one_delivery_make_one_request(receiver):
    # Given a due delivery (no worker: created and fanned out here) to a receiver that takes
    # 0.5 s to answer, so the first send is still in flight when the second tries
    Endpoint.objects.create(url=receiver.url("/hook"))
    event = Event.objects.create(type="order.paid", payload={"order": 10})
    [delivery_id] = fan_out(str(event.id))
    receiver.script("/hook", [stall_then_ok(0.5)])
    barrier = threading.Barrier(2)
    results: list[SendOutcome | Exception | None] = [None, None]

    def send(index: int) -> None:
        try:
            barrier.wait(timeout=5)
            results[index] = send_delivery(delivery_id)
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    # When two threads send it at the same moment
    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in threads)

    # Then exactly one of them sends it, once; the other does nothing
    outcomes = [r for r in results if r is not None]
    assert len(outcomes) == 1, results
    assert outcomes[0] == SendOutcome(delivery_id, "succeeded", 1, None)
    assert len(receiver.received("/hook")) == 1
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1
    assert delivery.locked_until is None
    assert attempts_of(delivery) == [(1, 200, "", "succeeded")]
