"""The Celery app: at-least-once delivery settings, stable task names and routing.

The database is the record of what is still to be sent; a broker message only says "try
delivery X now". So a lost message costs a sweep interval, never an event.
"""

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")

FANOUT_QUEUE = "webhooks.fanout"
DELIVERY_QUEUE = "webhooks.deliveries"
MAINTENANCE_QUEUE = "webhooks.maintenance"
QUEUES = (FANOUT_QUEUE, DELIVERY_QUEUE, MAINTENANCE_QUEUE)

app = Celery("webhooks_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    # Acknowledge after the task ran, so a worker that dies mid-send leaves the message to be
    # delivered again; with prefork, a killed child is rejected (requeued), not acked.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # One message at a time per pool slot: a slow endpoint cannot hoard a backlog in a worker.
    worker_prefetch_multiplier=1,
    # A dropped broker connection cancels unacked tasks instead of letting them run twice.
    worker_cancel_long_running_tasks_on_connection_loss=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # One direct exchange and routing key per queue: with a shared exchange and key, a broker
    # that honours bindings (RabbitMQ) would copy every message into all three queues.
    task_queues=tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES),
    task_default_queue=DELIVERY_QUEUE,
    task_routes={
        "deliveries.fan_out": {"queue": FANOUT_QUEUE},
        "deliveries.send": {"queue": DELIVERY_QUEUE},
        "deliveries.sweep_due": {"queue": MAINTENANCE_QUEUE},
        "deliveries.health_check": {"queue": MAINTENANCE_QUEUE},
        "deliveries.retention": {"queue": MAINTENANCE_QUEUE},
    },
    broker_connection_retry_on_startup=True,
    # Publishing must not hang a web request when the broker is down: fail fast, the event row
    # is already committed and the sweep will fan it out.
    broker_connection_timeout=2,
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()
