"""Outgoing signals: each fires once, with its documented arguments, after the commit."""

import pytest
from django.db import connection

from deliveries import publish
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.signals import delivery_failed, delivery_retrying, delivery_succeeded
from endpoints.models import Endpoint
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def heard():
    """Records every delivery signal with its arguments and whether a transaction was open."""
    calls = []

    def listener(name):
        def receive(sender, **kwargs):
            kwargs.pop("signal")
            calls.append((name, sender, kwargs, connection.in_atomic_block))

        return receive

    receivers = {
        delivery_succeeded: listener("succeeded"),
        delivery_retrying: listener("retrying"),
        delivery_failed: listener("failed"),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield calls
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


def test_retrying_then_succeeded_fire_once_each_after_commit(celery_worker, receiver, heard, settings):
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.3"
    receiver.script("/hook", [(503, {}, b""), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"))

    event = publish("order.paid", {"n": 1})

    wait_until(lambda: len(heard) == 2)
    delivery = Delivery.objects.get(event=event)
    (retry_name, retry_sender, retry, retry_in_tx), (ok_name, ok_sender, ok, ok_in_tx) = heard
    assert (retry_name, retry_sender, retry_in_tx) == ("retrying", Delivery, False)
    assert set(retry) == {"delivery", "attempt", "next_attempt_at"}
    assert retry["delivery"].pk == delivery.pk
    assert retry["attempt"].number == 1 and retry["attempt"].response_status == 503
    assert retry["next_attempt_at"] == retry["delivery"].next_attempt_at is not None
    assert (ok_name, ok_sender, ok_in_tx) == ("succeeded", Delivery, False)
    assert set(ok) == {"delivery", "attempt"}
    assert ok["delivery"].status == DeliveryStatus.SUCCEEDED and ok["delivery"].attempt_count == 2
    assert ok["attempt"] == DeliveryAttempt.objects.get(delivery=delivery, number=2)


def test_failed_fires_once_with_the_reason(celery_worker, receiver, heard):
    receiver.script("/hook", [(400, {}, b"bad")])
    Endpoint.objects.create(url=receiver.url("/hook"))

    publish("order.paid", {"n": 2})

    wait_until(lambda: heard)
    wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.FAILED).exists())
    [(name, sender, kwargs, in_transaction)] = heard
    assert (name, sender, in_transaction) == ("failed", Delivery, False)
    assert set(kwargs) == {"delivery", "attempt", "reason"}
    assert kwargs["reason"] == "HTTP 400"
    assert kwargs["delivery"].status == DeliveryStatus.FAILED
    assert kwargs["attempt"].response_status == 400
