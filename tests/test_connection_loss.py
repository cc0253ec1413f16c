"""A PostgreSQL connection lost while a batch is being sent (issue 11): what was sent is recorded on
a new connection, never sent again.

A sender's connection sits idle while its requests are in flight; when the server drops it (a
restart, a failover, a pooler's idle timeout, `pg_terminate_backend`), the sender only finds out
when it writes the attempts of the requests it has just made. These tests drop real connections
with `pg_terminate_backend`: of a real worker process mid-batch, and of this process's own
connection while it sends (from the receiver, at a chosen request).
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from django.db import OperationalError, connection, connections, transaction
from django.utils import timezone

from deliveries import publish_many, signals
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.sending import send_deliveries
from endpoints.models import Endpoint
from tests.conftest import celery_broker, wait_until
from tests.processes import SlowAnswers, wait_until_consuming
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

WORKER_APPLICATION = "webhooks-test-connection-loss"  # the worker's sessions, as PostgreSQL names them


@pytest.fixture
def killer(transactional_db) -> Iterator[Callable[[str, tuple], int]]:
    """A raw connection of its own, usable from any thread, to the server's `postgres` database
    (so that it may refuse connections to the test database): runs a query (e.g. a
    pg_terminate_backend) and returns its first column. Connections to the test database are
    allowed again at the end, whatever the test did."""
    settings = connection.settings_dict
    raw = psycopg2.connect(
        dbname="postgres",
        user=settings["USER"] or "postgres",
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
    )
    raw.autocommit = True
    lock = threading.Lock()

    def run(sql: str, params: tuple = ()) -> int:
        with lock, raw.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0] if cursor.description else 0

    try:
        yield run
    finally:
        run(f'ALTER DATABASE "{settings["NAME"]}" ALLOW_CONNECTIONS true')
        raw.close()


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def due_deliveries(endpoint: Endpoint, count: int) -> list[int]:
    """`count` deliveries to `endpoint`, due now, each of its own event."""
    now = timezone.now()
    events = [Event.objects.create(type="order.paid", payload={"n": n}) for n in range(count)]
    return [Delivery.objects.create(event=e, endpoint=endpoint, next_attempt_at=now).pk for e in events]


def ok_after(action: Callable[[], None]) -> Callable:
    """A receiver answer: run `action` (e.g. drop the sender's connection), then answer 200."""

    def answer(handler) -> None:
        action()
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    return answer


def sends_and_attempts(ids: list[int], receiver: Receiver) -> tuple[Counter, Counter]:
    """(requests received per webhook id, attempt rows per webhook id) for these deliveries."""
    received = Counter(r.headers["webhook-id"] for r in receiver.received("/hook"))
    attempts = Counter(
        f"evt_{event_id.hex}"
        for event_id in DeliveryAttempt.objects.filter(delivery_id__in=ids).values_list("delivery__event_id", flat=True)
    )
    return received, attempts


def assert_sent_and_recorded_once_each(ids: list[int], receiver: Receiver) -> None:
    deliveries = list(Delivery.objects.filter(pk__in=ids).select_related("event"))
    webhook_ids = {d.event.webhook_id for d in deliveries}
    received, attempts = sends_and_attempts(ids, receiver)
    assert received == Counter(webhook_ids), "each delivery sent exactly once"
    assert attempts == Counter(webhook_ids), "each delivery has exactly one attempt row"
    for delivery in deliveries:
        assert delivery.status == DeliveryStatus.SUCCEEDED
        assert delivery.attempt_count == 1
        assert [(a.number, a.response_status, a.outcome) for a in delivery.attempts.all()] == [(1, 200, "succeeded")]
        assert (delivery.locked_until, delivery.next_attempt_at, delivery.queued_until) == (None, None, None)


def test_connection_dropped_while_a_batch_is_sent_is_replaced_to_record_it(receiver, killer):
    # Given five due deliveries of one endpoint, and a receiver that drops the sender's (this
    # thread's) PostgreSQL connection when the second request arrives
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    ids = due_deliveries(endpoint, 5)
    sender = backend_pid()
    dropped = []
    drop = ok_after(lambda: dropped.append(killer("SELECT pg_terminate_backend(%s)", (sender,))))
    receiver.script("/hook", [(200, {}, b"ok"), drop, (200, {}, b"ok")])

    # When they are sent as one batch
    batch = send_deliveries(ids)

    # Then the connection was really dropped mid-batch, and the batch was recorded on a new one:
    # every delivery sent once, with its attempt row, and nothing left leased
    assert dropped == [True]
    assert backend_pid() != sender
    assert [o.verdict for o in batch.outcomes] == ["succeeded"] * 5
    assert not batch.released
    assert_sent_and_recorded_once_each(ids, receiver)


def test_a_commit_whose_answer_was_lost_is_not_written_twice(receiver, monkeypatch):
    # Given three due deliveries, a listener of delivery_succeeded, and a database connection that
    # loses the answer to the record's COMMIT once: the COMMIT is done on the server, the client
    # sees an error (the one fault PostgreSQL cannot be made to produce on demand, injected here)
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    ids = due_deliveries(endpoint, 3)
    announced = []

    def listen(sender, delivery, attempt, **kwargs) -> None:
        announced.append((delivery.pk, attempt.pk))

    signals.delivery_succeeded.connect(listen, weak=False, dispatch_uid="test.lost_commit")
    backend = type(connections["default"])
    real_commit = backend._commit
    lost = []

    def commit_then_lose_the_answer(self) -> None:
        real_commit(self)
        if not lost:
            lost.append(True)
            raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(backend, "_commit", commit_then_lose_the_answer)
    try:
        # When they are sent as one batch
        batch = send_deliveries(ids)
    finally:
        signals.delivery_succeeded.disconnect(dispatch_uid="test.lost_commit")

    # Then the commit's answer was lost, and the second try found the batch recorded: one attempt
    # row each, the outcomes returned, and each success announced once, with its attempt's row
    assert lost == [True]
    assert [o.verdict for o in batch.outcomes] == ["succeeded"] * 3
    assert_sent_and_recorded_once_each(ids, receiver)
    rows = dict(DeliveryAttempt.objects.filter(delivery_id__in=ids).values_list("delivery_id", "pk"))
    assert sorted(announced) == sorted(rows.items())


def test_a_database_gone_for_longer_than_the_retries_leaves_the_batch_to_its_lease(
    receiver, killer, monkeypatch, caplog
):
    # Given two due deliveries, record retries shortened to 0.1 s apart, and a receiver that,
    # at the first request, drops the sender's connection and refuses new ones to the database
    monkeypatch.setattr("deliveries.attempt_records.RECORD_RETRY_DELAYS", (0, 0.1, 0.1))
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    ids = due_deliveries(endpoint, 2)
    sender, name = backend_pid(), connection.settings_dict["NAME"]

    def database_gone() -> None:
        killer(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        killer("SELECT pg_terminate_backend(%s)", (sender,))

    receiver.script("/hook", [ok_after(database_gone), (200, {}, b"ok")])

    # When they are sent as one batch
    with caplog.at_level(logging.ERROR, logger="deliveries"), pytest.raises(OperationalError):
        send_deliveries(ids)

    # Then both went out, the failure to record them is logged as an error naming them, and once
    # the database is back they are still leased, unrecorded: the lease's expiry hands them to
    # the sweep (at-least-once)
    assert len(receiver.received("/hook")) == 2
    assert any("could not record" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    killer(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    connection.close()
    leased = Delivery.objects.filter(pk__in=ids, locked_until__gt=timezone.now(), attempt_count=0)
    assert leased.count() == 2
    assert not DeliveryAttempt.objects.filter(delivery_id__in=ids).exists()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_worker_connections_killed_mid_batch_cost_no_resend_and_no_missing_attempt(processes, receiver, killer):
    # Given a receiver taking 80 ms per request, a worker process (8 threads) whose PostgreSQL
    # sessions carry a name of their own, and beat; a claim margin of 5 s so that a batch sends
    # up to 2.5 s (20 requests) before it records
    answers = SlowAnswers(0.08)
    receiver.script("/hook", [answers])
    Endpoint.objects.create(url=receiver.url("/hook"))
    broker = processes.redis()
    processes.worker(broker, PGAPPNAME=WORKER_APPLICATION, WEBHOOKS_CLAIM_MARGIN=5)
    processes.beat(broker, WEBHOOKS_CLAIM_MARGIN=5)
    wait_until_consuming(broker)

    # When 240 events are published in one transaction (one fan-out, batches of 20)
    with celery_broker(broker.url), transaction.atomic():
        events = publish_many([("order.paid", {"n": n}) for n in range(240)])
    # and once 40 requests have arrived, with the batches' requests in flight, every session of
    # the worker is terminated by PostgreSQL
    receiver.wait_for(40, "/hook", timeout=30)
    killed = killer(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        (connection.settings_dict["NAME"], WORKER_APPLICATION),
    )
    killed_at = time.monotonic()
    in_flight, _ = answers.snapshot()
    sent_at_kill = len(receiver.received("/hook"))

    # Then every delivery succeeds
    ids = list(Delivery.objects.filter(event__in=events).values_list("pk", flat=True))
    assert len(ids) == 240
    wait_until(
        lambda: Delivery.objects.filter(pk__in=ids, status=DeliveryStatus.SUCCEEDED).count() == 240,
        90,
        "all 240 deliveries succeeded",
        interval=0.2,
    )
    settled = time.monotonic() - killed_at
    received, attempts = sends_and_attempts(ids, receiver)
    resent = sum(received.values()) - len(received)
    unrecorded = sum((received - attempts).values())
    print(
        f"MEASURED worker sessions killed mid-batch: {killed} sessions, {sent_at_kill} sent and "
        f"{len(in_flight)} in flight at the kill; duplicates: {resent}, sends without an attempt row: "
        f"{unrecorded}, all 240 succeeded {settled:.2f} s after the kill"
    )
    assert killed >= 1 and in_flight and sent_at_kill < 240, "the kill was meant to catch batches mid-send"
    # each sent once, each with exactly one attempt row
    assert (resent, unrecorded) == (0, 0)
    assert_sent_and_recorded_once_each(ids, receiver)


def test_an_attempt_number_taken_by_a_lapsed_senders_late_record_is_skipped_not_retried_forever(receiver):
    # Given a due delivery whose attempt 1 was recorded late by a sender whose lease had lapsed
    # (its state untouched: attempt_count is still 0, so the next sender also makes "attempt 1")
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    [delivery_id] = due_deliveries(endpoint, 1)
    DeliveryAttempt.objects.create(
        delivery_id=delivery_id, number=1, started_at=timezone.now(), duration_ms=5, response_status=200
    )

    # When it is sent
    batch = send_deliveries([delivery_id])

    # Then the send is recorded after the late row instead of failing on its number (which would
    # leave the delivery leased, to be sent again at every lease, never recorded)
    assert [(o.verdict, o.attempt) for o in batch.outcomes] == [("succeeded", 2)]
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempt_count, delivery.locked_until) == (DeliveryStatus.SUCCEEDED, 2, None)
    assert list(delivery.attempts.values_list("number", flat=True)) == [1, 2]
    assert len(receiver.received("/hook")) == 1
