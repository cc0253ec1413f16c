"""RabbitMQ as the broker: the same code with CELERY_BROKER_URL=amqp://... End to end on
PostgreSQL, a real receiver on 127.0.0.1 and RabbitMQ on 127.0.0.1:5672, in a virtual host of the
run's own (tests/conftest.py, `rabbitmq`): publish -> fan-out -> signed POST, a retry through a
countdown held by the worker, a 410 that disables, with a worker in this process; and a worker
process killed mid-send.

Where Redis hands an unacknowledged message out again only after its visibility timeout, RabbitMQ
requeues it as soon as the consumer's connection closes: measured here (`MEASURED ...`, `-rP`).
In CI these tests fail when RabbitMQ does not answer; elsewhere they are skipped, saying why.
"""

import json
import time

import pytest
import standardwebhooks
from django.db import transaction

from deliveries import publish
from deliveries.celery import FANOUT_QUEUE, QUEUES
from deliveries.models import DeliveryStatus
from endpoints.models import Endpoint
from tests.conftest import running_worker, wait_until
from tests.test_faults import assert_resent_only_what_was_in_flight, attempts_of, measured, worker_mid_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.rabbitmq, pytest.mark.timeout(90)]


def finished(event):
    """A predicate returning the event's deliveries once none is pending any more."""

    def check():
        deliveries = list(event.deliveries.all())
        return deliveries if deliveries and all(d.status != DeliveryStatus.PENDING for d in deliveries) else None

    return check


def test_event_published_waits_in_rabbitmq_then_reaches_every_subscribed_endpoint_signed(celery_on_amqp, receiver):
    # Given two endpoints of tenant "acme" subscribed to the event, one subscribed to other types
    # and one of another tenant, and no worker running yet
    endpoints = {
        "/all": Endpoint.objects.create(url=receiver.url("/all"), tenant="acme"),
        "/orders": Endpoint.objects.create(url=receiver.url("/orders"), tenant="acme", event_types=["order.*"]),
    }
    Endpoint.objects.create(url=receiver.url("/invoices"), tenant="acme", event_types=["invoice.*"])
    Endpoint.objects.create(url=receiver.url("/other-tenant"), tenant="globex")

    # When an event is published in a transaction that commits
    with transaction.atomic():
        event = publish("order.paid", {"order": 1, "note": "café"}, tenant="acme")

    # Then its fan-out message waits in RabbitMQ
    assert celery_on_amqp.queue_lengths() == {**dict.fromkeys(QUEUES, 0), FANOUT_QUEUE: 1}

    # and once a worker consumes from RabbitMQ, both matching endpoints get it, signed
    with running_worker() as worker:
        assert worker.consumer.connection.transport.driver_type == "amqp"
        deliveries = wait_until(finished(event), 15, "both deliveries finished")
    assert sorted(d.status for d in deliveries) == [DeliveryStatus.SUCCEEDED] * 2
    assert sorted(r.path for r in receiver.received()) == ["/all", "/orders"]
    for path, endpoint in endpoints.items():
        [request] = receiver.received(path)
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = standardwebhooks.Webhook(endpoint.secret).verify(request.body, headers)
        assert verified == json.loads(request.body)
        assert (verified["id"], verified["data"]) == (event.webhook_id, {"order": 1, "note": "café"})
    # and nothing is left in the queues
    assert celery_on_amqp.queue_lengths() == dict.fromkeys(QUEUES, 0)


def test_server_error_is_retried_through_a_countdown_on_rabbitmq_then_succeeds(
    celery_worker_amqp, celery_on_amqp, receiver, settings
):
    # Given an endpoint that answers 500 once, then 200, and a retry 1 s (±20 %) later: a short
    # wait, so it goes back to RabbitMQ as a countdown the worker holds unacknowledged
    settings.WEBHOOKS_RETRY_SCHEDULE = "1"
    receiver.script("/hook", [(500, {}, b"boom"), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 2})

    # Then the second attempt succeeds, on schedule, with the same webhook id
    [delivery] = wait_until(finished(event), 15, "delivered")
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert attempts_of(delivery) == [(1, 500, "", "retry"), (2, 200, "", "succeeded")]
    first, second = receiver.received("/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event.webhook_id
    assert 0.8 <= second.received_at - first.received_at <= 1.2 + 0.7
    measured("RabbitMQ: second request after the first (scheduled 1 s ±20 %)", second.received_at - first.received_at)
    # and no copy of the countdown message runs again
    time.sleep(1.5)
    assert len(receiver.received("/hook")) == 2
    assert celery_on_amqp.queue_lengths() == dict.fromkeys(QUEUES, 0)


def test_gone_fails_at_once_and_disables_the_endpoint_on_rabbitmq(celery_worker_amqp, receiver, settings):
    # Given an endpoint that answers 410 Gone (and retries that would come quickly)
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5,0.5"
    receiver.script("/hook", [(410, {}, b"")])
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))

    # When an event is published
    event = publish("order.paid", {"order": 3})

    # Then the delivery fails after one attempt and the endpoint is disabled, saying why
    [delivery] = wait_until(finished(event), 10, "failed")
    assert delivery.status == DeliveryStatus.FAILED
    assert attempts_of(delivery) == [(1, 410, "", "gone")]
    endpoint.refresh_from_db()
    assert endpoint.is_active is False
    assert "410" in endpoint.disabled_reason
    time.sleep(1)  # longer than both retry waits: nothing more is sent
    assert len(receiver.received("/hook")) == 1


@pytest.mark.slow
def test_worker_killed_mid_send_on_rabbitmq_resends_only_the_sends_it_had_in_flight(amqp_broker, processes, receiver):
    # (amqp_broker before processes: the workers are dead before its queues are purged.)
    # Given a worker process on RabbitMQ sending 30 slow deliveries, and beat
    sending = worker_mid_send(processes, amqp_broker, receiver)
    waiting_before = sum(amqp_broker.queue_lengths().values())

    # When the worker is killed (SIGKILL) with the second wave of requests in flight
    sending.kill(receiver)

    # Then RabbitMQ takes back the messages it held unacknowledged as soon as its connection is
    # gone (no visibility timeout): no consumer is left, and more messages wait than before
    def requeued() -> int:
        stats = amqp_broker.queue_stats().values()
        waiting = sum(messages for messages, _ in stats)
        return not any(consumers for _, consumers in stats) and waiting > waiting_before and waiting - waiting_before

    back = wait_until(requeued, 10, "the killed worker's messages requeued", interval=0.02)
    measured(
        f"RabbitMQ: worker kill -9 -> {back} more messages waiting (its unacked ones requeued)",
        time.monotonic() - sending.killed_at,
    )

    # When a new worker takes over
    processes.worker(amqp_broker)

    # Then every delivery succeeds, and only the sends the dead worker had made but not recorded
    # come twice
    assert_resent_only_what_was_in_flight(sending, receiver, "RabbitMQ")
