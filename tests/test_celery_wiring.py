"""`deliveries.celery.configure(app)`: the one line a host adds to its celery.py.

The host apps here are fresh Celery apps configured from a plain settings object, the way a
host's celery.py configures its own (never made the current app, so the rest of the suite keeps
using webhooks_project's). The end-to-end test runs a real worker started without -Q, and beat,
as child processes."""

import re
from datetime import timedelta

import pytest
from celery import Celery
from celery.schedules import crontab
from django.conf import settings as django_settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler
from kombu import Queue

import deliveries.tasks  # noqa: F401  (registers the shared tasks, as a worker's autodiscovery does)
from deliveries.celery import DELIVERY_QUEUE, FANOUT_QUEUE, MAINTENANCE_QUEUE, QUEUES, configure
from deliveries.models import Delivery, DeliveryStatus, Event
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.processes import wait_until_consuming

BEAT_ENTRIES = {"webhooks-sweep-due", "webhooks-health", "webhooks-retention"}


def host_app(**celery_settings) -> Celery:
    """A host's Celery app: its own settings, then configure(), as in the README's lines."""

    class HostSettings:
        pass

    for name, value in celery_settings.items():
        setattr(HostSettings, name, value)
    app = Celery("host", set_as_current=False)
    app.config_from_object(HostSettings)
    app.autodiscover_tasks()
    configure(app)
    return app


def queue_of(app: Celery, task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_a_host_worker_without_queues_option_consumes_every_pipeline_queue_and_its_own_default():
    app = host_app()

    assert list(app.amqp.queues) == ["celery", *QUEUES]  # what `worker` without -Q consumes
    assert queue_of(app, "deliveries.fan_out") == FANOUT_QUEUE
    assert queue_of(app, "deliveries.send") == queue_of(app, "deliveries.send_many") == DELIVERY_QUEUE
    for task in ("deliveries.sweep_due", "deliveries.health_check", "deliveries.retention"):
        assert queue_of(app, task) == MAINTENANCE_QUEUE
    assert queue_of(app, "shop.tasks.invoice") == "celery"  # the host's own tasks: its default queue


def test_configure_forces_what_delivery_correctness_needs():
    app = host_app(worker_prefetch_multiplier=8, worker_cancel_long_running_tasks_on_connection_loss=False)

    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is True


def test_configure_leaves_the_hosts_unrelated_settings_alone():
    # Given a host with settings of its own, some touching what the pipeline uses too
    def host_router(name, args, kwargs, options, task=None, **kw):
        return {"queue": "shop"} if name.startswith("shop.") else None

    host_schedule = {"shop-report": {"task": "shop.report", "schedule": 3600.0}}
    app = host_app(
        task_queues=[Queue("shop")],
        task_default_queue="shop",
        task_routes=[host_router],
        task_acks_late=False,
        task_serializer="pickle",
        accept_content=["pickle"],
        broker_connection_timeout=9,
        beat_schedule=host_schedule,
    )

    # Then its settings stand, and the pipeline's are added beside them
    assert list(app.amqp.queues) == ["shop", *QUEUES]
    assert queue_of(app, "shop.report") == "shop"
    assert queue_of(app, "deliveries.send") == DELIVERY_QUEUE
    assert app.conf.task_acks_late is False
    assert app.conf.task_serializer == "pickle"
    assert list(app.conf.accept_content) == ["pickle", "json"]  # json added, nothing removed
    assert app.conf.broker_connection_timeout == 9
    assert set(app.conf.beat_schedule) == {"shop-report", *BEAT_ENTRIES}
    # and the pipeline's tasks keep late acks and JSON whatever the host's defaults are
    for name in ("deliveries.fan_out", "deliveries.send", "deliveries.send_many", "deliveries.sweep_due"):
        task = app.tasks[name]
        assert (task.acks_late, task.reject_on_worker_lost, task.serializer) == (True, True, "json"), name


def test_a_host_route_or_beat_entry_of_the_same_name_replaces_the_pipelines():
    app = host_app(
        task_routes={"deliveries.retention": {"queue": "nightly"}},
        beat_schedule={"webhooks-retention": {"task": "deliveries.retention", "schedule": crontab(hour=5, minute=0)}},
    )

    assert queue_of(app, "deliveries.retention") == "nightly"
    assert queue_of(app, "deliveries.sweep_due") == MAINTENANCE_QUEUE
    assert app.conf.beat_schedule["webhooks-retention"]["schedule"] == crontab(hour=5, minute=0)


def test_configure_is_idempotent():
    app = host_app(task_routes=[{"shop.*": {"queue": "shop"}}])
    configure(app)

    assert list(app.amqp.queues) == ["celery", *QUEUES]
    assert len(app.conf.task_routes) == 2


def test_beat_intervals_come_from_the_django_settings(settings):
    settings.WEBHOOKS_SWEEP_INTERVAL = 7
    settings.WEBHOOKS_HEALTH_INTERVAL = 11
    settings.WEBHOOKS_RETENTION_SCHEDULE = crontab(hour=1, minute=5)

    schedule = host_app().conf.beat_schedule

    assert schedule["webhooks-sweep-due"]["schedule"] == 7
    assert schedule["webhooks-sweep-due"]["options"] == {"queue": MAINTENANCE_QUEUE, "expires": 7}
    assert schedule["webhooks-health"]["schedule"] == 11
    assert schedule["webhooks-retention"]["schedule"] == crontab(hour=1, minute=5)


@pytest.mark.django_db(transaction=True)
def test_beat_writes_the_three_jobs_into_a_fresh_database_of_a_host_without_a_beat_schedule(settings):
    # Given a fresh database, and a host whose settings have no CELERY_BEAT_SCHEDULE
    assert not PeriodicTask.objects.filter(task__startswith="deliveries.").exists()
    assert not hasattr(django_settings, "CELERY_BEAT_SCHEDULE")
    settings.WEBHOOKS_SWEEP_INTERVAL = 5

    # When beat starts (DatabaseScheduler syncs the app's beat_schedule into its tables)
    DatabaseScheduler(app=host_app())

    # Then the sweep, health and retention jobs are there, on the maintenance queue
    tasks = {task.name: task for task in PeriodicTask.objects.filter(name__in=BEAT_ENTRIES)}
    assert set(tasks) == BEAT_ENTRIES
    assert (tasks["webhooks-sweep-due"].task, tasks["webhooks-sweep-due"].interval.every) == ("deliveries.sweep_due", 5)
    assert tasks["webhooks-health"].interval.every == 60
    assert (tasks["webhooks-retention"].crontab.hour, tasks["webhooks-retention"].crontab.minute) == ("3", "17")
    assert {task.queue for task in tasks.values()} == {MAINTENANCE_QUEUE}
    assert all(task.enabled for task in tasks.values())


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_worker_started_without_queues_option_runs_every_lane(processes, receiver):
    # Given an endpoint whose first answer is a 500 (so a retry goes through the retry lane), an
    # event whose fan-out message was lost (only the sweep, on the maintenance lane, finds it),
    # and a worker started without -Q next to beat (sends through the delivery lane: the fan-out
    # task leaves every send to send tasks)
    receiver.script("/hook", [(500, {}, b"try again"), (200, {}, b"ok")])
    Endpoint.objects.create(url=receiver.url("/hook"))
    lost = Event.objects.create(type="order.paid", payload={"order": "lost"})
    Event.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=300))
    broker = processes.redis()
    worker = processes.worker(broker, queues=None, WEBHOOKS_FANOUT_SENDS_FIRST_BATCH=0)
    processes.beat(broker)
    wait_until_consuming(broker)

    # When an event is published (fan-out lane)
    [published] = processes.publish(broker, 1, "no-q")

    # Then both events are delivered, one of them after a retry
    def delivered() -> bool:
        return Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 2

    wait_until(delivered, 45, "both deliveries succeeded")
    assert {str(d.event_id) for d in Delivery.objects.all()} == {str(lost.pk), published.id}
    assert sorted(d.attempt_count for d in Delivery.objects.all()) == [1, 2]
    # and the worker said it consumes all four queues, and ran the tasks of each lane
    log = worker.output()
    assert all(f".> {queue} " in log for queue in QUEUES), log
    for task in ("deliveries.sweep_due", "deliveries.fan_out", "deliveries.send"):
        assert re.search(rf"Task {re.escape(task)}\[[-0-9a-f]+\] succeeded", log), task
    # and beat registered the jobs with the intervals of the children's settings (FAST_SETTINGS)
    sweep = PeriodicTask.objects.get(name="webhooks-sweep-due")
    assert sweep.interval.every == 1
    assert set(PeriodicTask.objects.filter(name__in=BEAT_ENTRIES).values_list("name", flat=True)) == BEAT_ENTRIES
