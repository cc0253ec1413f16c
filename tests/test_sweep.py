"""The sweep: work the broker lost or never had goes back to the workers."""

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.sweeper import take_due_deliveries
from deliveries.tasks import sweep_due_task
from endpoints.models import Endpoint
from tests.conftest import wait_until
from webhooks_project.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)


def test_beat_registers_the_sweep_in_the_database_on_a_fresh_install():
    # The jobs come from deliveries.celery.configure(), not from the project's settings.
    assert not hasattr(django_settings, "CELERY_BEAT_SCHEDULE")
    assert not PeriodicTask.objects.filter(task__startswith="deliveries.").exists()

    DatabaseScheduler(app=celery_app)  # what `celery beat` builds at start-up

    task = PeriodicTask.objects.get(task="deliveries.sweep_due")
    assert task.enabled
    assert task.interval.every == 15
    assert task.queue == "webhooks.maintenance"
    registered = PeriodicTask.objects.filter(task__startswith="deliveries.").values_list("task", flat=True)
    assert set(registered) == {"deliveries.sweep_due", "deliveries.health_check", "deliveries.retention"}


def test_event_whose_fan_out_message_was_lost_is_delivered_by_the_sweep(celery_worker, receiver, settings):
    # Given an event committed but never fanned out (the broker was down at commit)
    Endpoint.objects.create(url=receiver.url("/hook"))
    event = Event.objects.create(type="order.paid", payload={"order": 1})
    Event.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(seconds=300))

    # When the sweep runs
    result = sweep_due_task()

    # Then it is fanned out and delivered
    assert result["events"] == 1
    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == event.webhook_id
    wait_until(lambda: Delivery.objects.filter(event=event, status=DeliveryStatus.SUCCEEDED).exists())


def test_recent_events_are_left_to_their_own_fan_out_message():
    Event.objects.create(type="order.paid", payload={})
    assert sweep_due_task()["events"] == 0


def test_delivery_abandoned_by_a_dead_worker_is_sent_again(celery_worker, receiver):
    # Given a delivery claimed by a worker that died mid-send: its lease has lapsed
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    event = Event.objects.create(type="order.paid", payload={"order": 2}, fanned_out_at=timezone.now())
    past = timezone.now() - timedelta(seconds=1)
    delivery = Delivery.objects.create(
        event=event, endpoint=endpoint, next_attempt_at=past, locked_until=past, queued_until=past
    )

    sweep_due_task()

    receiver.wait_for(1)
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)
    assert Delivery.objects.get(pk=delivery.pk).attempt_count == 1


def test_sweep_skips_claimed_queued_and_future_deliveries_and_never_takes_a_row_twice():
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    now = timezone.now()
    later = now + timedelta(seconds=60)
    earlier = now - timedelta(seconds=1)

    def delivery(**fields):
        event = Event.objects.create(type="order.paid", payload={}, fanned_out_at=now)
        return Delivery.objects.create(event=event, endpoint=endpoint, **fields).pk

    due = delivery(next_attempt_at=earlier)
    delivery(next_attempt_at=later)  # not yet due
    delivery(next_attempt_at=earlier, locked_until=later)  # being sent
    delivery(next_attempt_at=earlier, queued_until=later)  # its message is expected
    delivery(next_attempt_at=None)  # parked
    delivery(next_attempt_at=earlier, status=DeliveryStatus.FAILED)

    assert take_due_deliveries(100) == [due]
    assert take_due_deliveries(100) == []  # marked queued by the first sweep
