"""The Celery app: at-least-once delivery settings, stable task names and routing.

The database is the record of what is still to be sent; a broker message only says "try
delivery X now". So a lost message costs a sweep interval, never an event.
"""

import os

from celery import Celery, signals
from django.db import close_old_connections
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
# The quick start's broker writes whole messages only (webhooks_project/filesystem_broker.py).
TRANSPORT_ALIASES["filesystem"] = "webhooks_project.filesystem_broker:Transport"

FANOUT_QUEUE = "webhooks.fanout"
DELIVERY_QUEUE = "webhooks.deliveries"
# Retries, and every send to an endpoint that is failing: a lane of its own, so that slow or
# broken endpoints never occupy the threads that serve healthy ones (README "Scaling out").
RETRY_QUEUE = "webhooks.retries"
MAINTENANCE_QUEUE = "webhooks.maintenance"
QUEUES = (FANOUT_QUEUE, DELIVERY_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE)

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
        "deliveries.send_many": {"queue": DELIVERY_QUEUE},
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
    # Celery's Django fixup closes every database connection before and after each task unless
    # this is set; a new PostgreSQL session per task cost more than the delivery itself (issue 7:
    # 2 sessions and ~28 ms of PostgreSQL CPU per delivery). Connections are kept instead and
    # handled as Django handles them around a request: see _recycle_connections below.
    CELERY_DB_REUSE_MAX=2**62,
)
app.autodiscover_tasks()


@signals.task_prerun.connect(dispatch_uid="webhooks.recycle_connections.prerun")
@signals.task_postrun.connect(dispatch_uid="webhooks.recycle_connections.postrun")
def _recycle_connections(sender=None, **kwargs) -> None:
    """Around every task, what Django does around every request: close this thread's connection
    if it is broken (an error left it unusable, e.g. PostgreSQL restarted) or older than
    CONN_MAX_AGE; otherwise keep it for the next task. Eager tasks share the caller's connection."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    close_old_connections()
