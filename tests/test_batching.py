"""Batching, lanes and connection reuse (issue 7), on PostgreSQL, Redis, a real worker and a
real receiver: fewer tasks and statements per delivery must not cost a delivery, a retry or a
signature."""

import json
import threading
from collections import Counter

import pytest
import redis
import standardwebhooks
from celery import signals
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.backends.signals import connection_created

from deliveries import publish, publish_many
from deliveries.celery import DELIVERY_QUEUE, RETRY_QUEUE
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.tasks import fan_out_task
from endpoints.models import Endpoint
from tests.conftest import flush_broker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class TaskLog:
    """Every task the in-process worker runs: its name and the queue it came from."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()

    def __call__(self, sender=None, task=None, args=None, **kwargs) -> None:
        queue = (task.request.delivery_info or {}).get("routing_key", "")
        with self._lock:
            self.runs.append((sender.name, queue, args[0] if args else None))

    def names(self) -> Counter:
        with self._lock:
            return Counter(name for name, _, _ in self.runs)

    def queues_of(self, name: str) -> list[str]:
        with self._lock:
            return [queue for task_name, queue, _ in self.runs if task_name == name]


@pytest.fixture
def task_log():
    log = TaskLog()
    signals.task_prerun.connect(log, weak=False)
    yield log
    signals.task_prerun.disconnect(log)


def all_settled(count: int, status: str = DeliveryStatus.SUCCEEDED):
    return lambda: Delivery.objects.filter(status=status).count() == count


def test_a_burst_to_one_endpoint_is_fanned_out_and_sent_in_batches(celery_worker, receiver, task_log):
    endpoint = Endpoint.objects.create(url=receiver.url("/burst"))

    with transaction.atomic():
        events = publish_many([("order.paid", {"n": n}) for n in range(45)])

    wait_until(all_settled(45), what="45 deliveries succeeded")
    # One fan-out message for the 45 events; their deliveries in batches of 20, 20 and 5, the
    # first sent by the fan-out task itself.
    names = task_log.names()
    assert names["deliveries.fan_out"] == 1
    assert names["deliveries.send_many"] == 2
    assert names["deliveries.send"] == 0
    # Each event arrived once, signed, with its own id, and each has exactly one attempt.
    requests = receiver.wait_for(45, "/burst")
    assert sorted(r.headers["webhook-id"] for r in requests) == sorted(e.webhook_id for e in events)
    verifier = standardwebhooks.Webhook(endpoint.secret)
    for request in requests:
        assert verifier.verify(request.body, request.headers)["data"]["n"] in range(45)
    assert DeliveryAttempt.objects.count() == 45
    assert set(DeliveryAttempt.objects.values_list("number", flat=True)) == {1}


def test_a_batch_stops_at_the_first_failure_and_gives_the_rest_to_the_retry_lane(
    celery_worker, receiver, task_log, settings
):
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5"
    receiver.script("/flaky", [(500, {}, b"down"), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/flaky"))

    with transaction.atomic():
        publish_many([("order.paid", {"n": n}) for n in range(5)])

    wait_until(all_settled(5), what="5 deliveries succeeded")
    # The first send (by the fan-out task) failed: the batch stopped there, the four others
    # went back unsent (one request each, later), and the failed one was retried once, all on
    # the retry lane.
    assert len(receiver.received("/flaky")) == 6
    attempts = Counter(DeliveryAttempt.objects.values_list("delivery_id", flat=True))
    assert sorted(attempts.values()) == [1, 1, 1, 1, 2]
    assert task_log.names()["deliveries.fan_out"] == 1
    sends = task_log.queues_of("deliveries.send_many") + task_log.queues_of("deliveries.send")
    assert sends and set(sends) == {RETRY_QUEUE}


def test_a_slow_endpoint_holds_a_thread_for_the_batch_time_budget_only(celery_worker, receiver, task_log, settings):
    settings.WEBHOOKS_SEND_BATCH_SECONDS = 0.05

    def slowly(handler) -> None:
        threading.Event().wait(0.1)
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    receiver.script("/slow", [slowly])
    Endpoint.objects.create(url=receiver.url("/slow"))

    with transaction.atomic():
        publish_many([("order.paid", {"n": n}) for n in range(4)])

    wait_until(all_settled(4), what="4 deliveries succeeded")
    # Each send outlasted the budget, so each task (the fan-out first) sent one and gave the
    # rest back.
    names = task_log.names()
    assert names["deliveries.fan_out"] == 1
    assert names["deliveries.send_many"] + names["deliveries.send"] == 3
    assert len(receiver.received("/slow")) == 4
    assert DeliveryAttempt.objects.count() == 4


def test_retries_and_failing_endpoints_are_routed_to_the_retry_lane(settings):
    settings.WEBHOOKS_FANOUT_SENDS_FIRST_BATCH = False  # enqueue every send, to look at them
    flush_broker()
    healthy = Endpoint.objects.create(url="http://127.0.0.1:9/healthy")
    failing = Endpoint.objects.create(url="http://127.0.0.1:9/failing")
    Endpoint.objects.filter(pk=failing.pk).update(consecutive_failures=2)
    with transaction.atomic():
        event = publish("order.paid", {"n": 1})

    fan_out_task(str(event.pk))  # run here; it publishes the sends to Redis

    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)

    def sends(queue: str) -> list[tuple[str, str]]:
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
        return [(m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages]

    delivery_of = dict(Delivery.objects.values_list("endpoint_id", "pk"))
    assert sends(DELIVERY_QUEUE) == [("deliveries.send", f"({delivery_of[healthy.pk]},)")]
    assert sends(RETRY_QUEUE) == [("deliveries.send", f"({delivery_of[failing.pk]},)")]
    flush_broker()


def test_worker_threads_keep_their_database_connections_across_tasks(celery_worker, receiver):
    opened = []

    def count(sender, connection, **kwargs) -> None:
        if threading.current_thread() is not threading.main_thread():
            opened.append(threading.get_ident())

    connection_created.connect(count, weak=False, dispatch_uid="test.count")
    try:
        Endpoint.objects.create(url=receiver.url("/reuse"))
        for n in range(30):  # 30 events, each its own transaction: 60 tasks
            with transaction.atomic():
                publish("order.paid", {"n": n})
        wait_until(all_settled(30), what="30 deliveries succeeded")
    finally:
        connection_created.disconnect(dispatch_uid="test.count")
    # At most one connection per worker thread (8), not one per task (60).
    assert 0 < len(opened) <= 8
    assert len(opened) == len(set(opened))


def test_connections_dropped_by_postgresql_cost_a_retry_not_a_delivery(celery_worker, receiver):
    Endpoint.objects.create(url=receiver.url("/dropped"))
    for n in range(8):  # warm every thread's connection
        with transaction.atomic():
            publish("order.paid", {"n": n})
    wait_until(all_settled(8), what="8 warm-up deliveries")

    # PostgreSQL drops every connection the worker keeps (a restart or a failover would).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1

    for n in range(8, 16):
        with transaction.atomic():
            publish("order.paid", {"n": n})
    # No sweep runs here: each task that met a dead connection ran again on a new one.
    wait_until(all_settled(16), timeout=20, what="16 deliveries succeeded")
    assert len(receiver.received("/dropped")) == 16
