"""Per-key ordering on real processes: two worker processes and beat on a private Redis,
PostgreSQL, a receiver on 127.0.0.1 that fails some first attempts.

For each endpoint and ordering key, a delivery is not sent before the previous one of that key
has finished; other keys keep flowing. Each test prints what it measured (`-rP`).
"""

import itertools
import json
import random
import threading
from collections import defaultdict

import pytest

from deliveries import ordering
from deliveries.models import Delivery, DeliveryStatus, OrderingKey, ParkedReason
from deliveries.operations import cancel_deliveries, retry_deliveries
from endpoints.models import Endpoint
from tests.conftest import celery_broker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(120)]


def publish_from_process(processes, broker, events: list[tuple[str, dict, str | None]]) -> None:
    """Each event published in its own transaction, in this order, by another process."""
    processes.publish_events(broker, [{"type": t, "data": d, "ordering_key": k} for t, d, k in events])


class FlakyFirstAttempts:
    """Answers 500 to a random third of first attempts (by the Webhook-Attempt header), 200
    otherwise, and records the bodies it accepted, in order."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted: list[dict] = []
        self.refused = 0

    def __call__(self, handler) -> None:
        request = handler.received
        with self.lock:
            fail = request.headers.get("Webhook-Attempt") == "1" and self.random.random() < 1 / 3
            if fail:
                self.refused += 1
            else:
                self.accepted.append({**json.loads(request.body), "headers": request.headers})
        status = 500 if fail else 200
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def start_fleet(processes, **settings):
    broker = processes.redis()
    for _ in range(2):
        processes.worker(broker, concurrency=4, **settings)
    processes.beat(broker, **settings)
    return broker


def test_each_key_is_received_in_publish_order_while_keys_interleave(processes, receiver):
    # Given an endpoint whose receiver refuses a random third of first attempts with a 500
    answers = FlakyFirstAttempts(seed=7)
    receiver.script("/hook", [answers])
    Endpoint.objects.create(url=receiver.url("/hook"))
    broker = start_fleet(processes)

    # When 5 keys x 20 events are published, the keys interleaved as a web app would
    events = [("order.updated", {"key": f"order-{k}", "n": n}, f"order-{k}") for n in range(20) for k in range(5)]
    publish_from_process(processes, broker, events)

    # Then all 100 succeed
    wait_until(
        lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 100, 90, "100 deliveries succeeded"
    )
    assert not Delivery.objects.exclude(status=DeliveryStatus.SUCCEEDED).exists()
    assert answers.refused > 10, "the receiver was meant to refuse some first attempts"

    # and for every key the order of first successful receipt is the publish order, numbered 1..20
    by_key = defaultdict(list)
    for body in answers.accepted:
        by_key[body["data"]["key"]].append(body)
    for key, bodies in by_key.items():
        assert [body["data"]["n"] for body in bodies] == list(range(20)), key
        assert [int(body["headers"]["Webhook-Sequence"]) for body in bodies] == list(range(1, 21)), key
        assert {body["headers"]["Webhook-Ordering-Key"] for body in bodies} == {key}
    retried = [body for body in answers.accepted if body["headers"]["Webhook-Attempt"] != "1"]
    assert len(retried) == answers.refused  # each refused first attempt succeeded on its retry
    assert {body["headers"]["Webhook-Attempt"] for body in retried} == {"2"}

    # and the keys interleaved: ordering did not serialize the endpoint
    keys_in_receipt_order = [body["data"]["key"] for body in answers.accepted]
    switches = sum(a != b for a, b in itertools.pairwise(keys_in_receipt_order))
    print(f"MEASURED 5 keys x 20 events: {answers.refused} first attempts refused, {switches} key switches")
    assert switches > 20


def chain(key: str) -> list[Delivery]:
    return list(Delivery.objects.filter(ordering_key=key).select_related("event").order_by("sequence"))


class HeadAnswers:
    """Answers the head of key order-7 (sequence 1) with `statuses` in turn (the last repeats),
    every other request with 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.lock = threading.Lock()

    def __call__(self, handler) -> None:
        headers = handler.received.headers
        status = 200
        if headers.get("Webhook-Ordering-Key") == "order-7" and headers.get("Webhook-Sequence") == "1":
            with self.lock:
                status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()


def received_of(receiver, key: str) -> list[int]:
    """The `n` of each request of `key`, in receipt order."""
    bodies = [(json.loads(r.body), r.headers) for r in receiver.received("/hook")]
    return [body["data"]["n"] for body, headers in bodies if headers.get("Webhook-Ordering-Key") == key]


def blocked_key_setup(processes, receiver, head: HeadAnswers):
    """An endpoint, a key of 5 events whose head is answered by `head`, and another key of 3
    that flows; returns once the head has failed twice and waits for its retry (an hour)."""
    receiver.script("/hook", [head])
    Endpoint.objects.create(url=receiver.url("/hook"))
    broker = start_fleet(processes, WEBHOOKS_RETRY_SCHEDULE="1,3600")
    events = [("order.updated", {"n": n}, "order-7") for n in range(5)]
    events += [("order.updated", {"n": n}, "order-8") for n in range(3)]
    publish_from_process(processes, broker, events)
    wait_until(
        lambda: Delivery.objects.filter(ordering_key="order-8", status=DeliveryStatus.SUCCEEDED).count() == 3, 60
    )
    wait_until(lambda: [d.attempt_count for d in chain("order-7")][:1] == [2], 60, "the head's second attempt recorded")
    return broker


def assert_blocked_behind_head() -> Delivery:
    head, *rest = chain("order-7")
    assert head.status == DeliveryStatus.PENDING and head.attempt_count == 2 and head.parked_reason == ""
    for delivery in rest:
        assert (delivery.status, delivery.attempt_count, delivery.parked_reason) == (
            DeliveryStatus.PENDING,
            0,
            ParkedReason.ORDERING,
        )
        assert delivery.next_attempt_at is None
    assert OrderingKey.objects.get(key="order-7").last_sequence == 5
    return head


def test_a_failing_head_blocks_only_its_key_until_an_operator_cancels_it(processes, receiver):
    # Given the head of key order-7 failing (500) and waiting an hour for its next retry
    broker = blocked_key_setup(processes, receiver, HeadAnswers([500]))

    # Then the rest of order-7 waits, parked behind it, while order-8 was delivered in order
    head = assert_blocked_behind_head()
    assert received_of(receiver, "order-7") == [0, 0]
    assert received_of(receiver, "order-8") == [0, 1, 2]

    # When an operator cancels the head (from this process, on the fleet's broker)
    with celery_broker(broker.url):
        assert cancel_deliveries([head.pk]).queued == [head.pk]

    # Then the rest of the key goes out, in order
    wait_until(
        lambda: Delivery.objects.filter(ordering_key="order-7", status=DeliveryStatus.SUCCEEDED).count() == 4, 30
    )
    assert received_of(receiver, "order-7") == [0, 0, 1, 2, 3, 4]
    assert Delivery.objects.get(pk=head.pk).status == DeliveryStatus.CANCELLED


def test_a_failing_head_moves_on_when_an_operator_retries_it_successfully(processes, receiver):
    # Given the head of key order-7 failing twice (the receiver is fixed after that)
    broker = blocked_key_setup(processes, receiver, HeadAnswers([500, 500, 200]))
    head = assert_blocked_behind_head()

    # When an operator retries it now (from this process, on the fleet's broker)
    with celery_broker(broker.url):
        assert retry_deliveries([head.pk]).queued == [head.pk]

    # Then the head succeeds on its third attempt and the rest of its key follows, in order
    wait_until(
        lambda: Delivery.objects.filter(ordering_key="order-7", status=DeliveryStatus.SUCCEEDED).count() == 5, 30
    )
    assert received_of(receiver, "order-7") == [0, 0, 0, 1, 2, 3, 4]
    assert [d.attempt_count for d in chain("order-7")] == [3, 1, 1, 1, 1]


def test_a_head_that_fails_for_good_keeps_its_key_blocked_until_an_operator_cancels_it(
    celery_worker, receiver, settings
):
    # Given retries that give up after the second attempt, and a receiver that refuses the head
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.1"
    receiver.script("/hook", [(500, {}, b"no"), (500, {}, b"no"), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"))
    from django.db import transaction

    from deliveries import publish

    # When three events of one key are published
    for n in range(3):
        with transaction.atomic():
            publish("order.updated", {"n": n}, ordering_key="order-9")

    # Then the head fails for good, and the rest of its key waits behind it, unsent
    wait_until(
        lambda: [d.status for d in chain("order-9")][:1] == [DeliveryStatus.FAILED], 30, "the head failed for good"
    )
    head, second, third = chain("order-9")
    assert [(d.status, d.parked_reason, d.attempt_count) for d in (second, third)] == [
        (DeliveryStatus.PENDING, ParkedReason.ORDERING, 0)
    ] * 2
    assert ordering.blocking_head(third) == head
    assert ordering.release_stalled() == []  # blocked on purpose, not stalled

    # When an operator cancels the failed head
    assert cancel_deliveries([head.pk]).queued == [head.pk]

    # Then the next two are sent, in order
    wait_until(
        lambda: (
            [d.status for d in chain("order-9")]
            == [DeliveryStatus.CANCELLED, DeliveryStatus.SUCCEEDED, DeliveryStatus.SUCCEEDED]
        ),
        30,
    )
    assert [json.loads(r.body)["data"]["n"] for r in receiver.received("/hook")] == [0, 0, 1, 2]
