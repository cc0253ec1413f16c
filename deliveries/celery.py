"""The pipeline's Celery wiring: queue names, routes, what delivery correctness needs from the
workers, database connection recycling and the beat jobs. A host wires its own Celery app with
one call, after the usual Django boilerplate of its celery.py:

    app = Celery("host")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()
    from deliveries.celery import configure; configure(app)

Then `celery -A host worker -P threads` (no -Q) consumes every queue of the pipeline and the
host's own, and `celery -A host beat -S django_celery_beat.schedulers:DatabaseScheduler` runs the
sweep, health and retention jobs: DatabaseScheduler writes `app.conf.beat_schedule` into its
tables at start-up. `-Q` still splits the lanes for a fleet (the Procfile's two workers).

What configure() does to the host's Celery settings, and why:

- Set on our tasks only, whatever the host's global settings say (TASK_OPTIONS): late acks and
  `reject_on_worker_lost` (a worker that dies mid-send leaves the message to be delivered
  again; the database then decides what still needs sending), JSON messages, no results.
  The host's own tasks keep the host's choices.
- Forced, because Celery offers them only worker-wide and correctness needs them (a host value
  that differs is replaced, with a warning in the log): `worker_prefetch_multiplier=1` (a slow
  endpoint cannot hoard a backlog of unacknowledged messages in one worker),
  `worker_cancel_long_running_tasks_on_connection_loss=True` (a dropped broker connection
  cancels unacknowledged tasks instead of letting them run twice), and "json" among
  `accept_content` (added to the host's list, nothing removed).
- Added, the host's entries winning on a clash: our four queues to `task_queues` (with the
  host's default queue when it declared none, so its own tasks are still consumed), our routes
  to `task_routes`, our three jobs to `beat_schedule` (a host entry of the same name replaces
  ours; intervals come from WEBHOOKS_SWEEP_INTERVAL, WEBHOOKS_HEALTH_INTERVAL and
  WEBHOOKS_RETENTION_SCHEDULE, read when the app's configuration loads).
- Defaults, only where the host set nothing: `broker_connection_timeout=2` and a short
  `task_publish_retry_policy` (publish() must not hang a web request while the broker is down;
  the event row is committed and the sweep fans it out later), and `CELERY_DB_REUSE_MAX` with
  the connection recycling below.
- Untouched: everything else (the broker, the default queue, the result backend, the
  serializers and ack mode of the host's tasks, time zone, logging).

The database is the record of what is still to be sent; a broker message only says "try
delivery X now". So a lost message costs a sweep interval, never an event.
"""

import logging
from typing import Any

from celery import Celery, signals
from celery.schedules import crontab
from django.db import close_old_connections
from kombu import Exchange, Queue

from endpoints.app_settings import webhook_settings

__all__ = [
    "DELIVERY_QUEUE",
    "FANOUT_QUEUE",
    "MAINTENANCE_QUEUE",
    "QUEUES",
    "RETRY_QUEUE",
    "ROUTES",
    "TASK_OPTIONS",
    "beat_schedule",
    "configure",
]

logger = logging.getLogger(__name__)

FANOUT_QUEUE = "webhooks.fanout"
DELIVERY_QUEUE = "webhooks.deliveries"
# Retries, and every send to an endpoint that is failing: a lane of its own, so that slow or
# broken endpoints never occupy the threads that serve healthy ones (README "Scaling out").
RETRY_QUEUE = "webhooks.retries"
MAINTENANCE_QUEUE = "webhooks.maintenance"
QUEUES = (FANOUT_QUEUE, DELIVERY_QUEUE, RETRY_QUEUE, MAINTENANCE_QUEUE)

# Keyed by the stable task names (deliveries/tasks.py, deliveries/retention.py).
ROUTES = {
    "deliveries.fan_out": {"queue": FANOUT_QUEUE},
    "deliveries.send": {"queue": DELIVERY_QUEUE},
    "deliveries.send_many": {"queue": DELIVERY_QUEUE},
    "deliveries.sweep_due": {"queue": MAINTENANCE_QUEUE},
    "deliveries.health_check": {"queue": MAINTENANCE_QUEUE},
    "deliveries.retention": {"queue": MAINTENANCE_QUEUE},
    "deliveries.verify_endpoint": {"queue": MAINTENANCE_QUEUE},
}

# Every task of the pipeline is declared with these (see the module docstring for why).
TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "serializer": "json",
    "ignore_result": True,
}

# Worker-wide settings correctness needs: replaced when the host set something else.
FORCED = {
    "worker_prefetch_multiplier": 1,
    "worker_cancel_long_running_tasks_on_connection_loss": True,
}

# Set only where the host set nothing.
DEFAULTS = {
    "broker_connection_timeout": 2,
    "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    # Celery's Django fixup closes every database connection before and after each task unless
    # this is set; a new PostgreSQL session per task cost more than the delivery itself (issue 7:
    # 2 sessions and ~28 ms of PostgreSQL CPU per delivery). Connections are kept instead and
    # handled as Django handles them around a request: see _recycle_connections below.
    "CELERY_DB_REUSE_MAX": 2**62,
}

# The retention job's default time: once a day, at a quiet minute.
DEFAULT_RETENTION_SCHEDULE = crontab(hour=3, minute=17)


def queue_declarations() -> tuple[Queue, ...]:
    """Our four queues. One direct exchange and routing key per queue: with a shared exchange and
    key, a broker that honours bindings (RabbitMQ) would copy every message into every queue."""
    return tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES)


def beat_schedule() -> dict[str, dict]:
    """The sweep, health and retention jobs, with their intervals from the Django settings as
    they are now. `expires` drops a run that waited longer than its interval."""
    sweep = float(webhook_settings.SWEEP_INTERVAL)
    health = float(webhook_settings.HEALTH_INTERVAL)
    retention = webhook_settings.RETENTION_SCHEDULE or DEFAULT_RETENTION_SCHEDULE
    return {
        "webhooks-sweep-due": {
            "task": "deliveries.sweep_due",
            "schedule": sweep,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": sweep},
        },
        "webhooks-health": {
            "task": "deliveries.health_check",
            "schedule": health,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": health},
        },
        "webhooks-retention": {
            "task": "deliveries.retention",
            "schedule": retention,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600},
        },
    }


def configure(app: Celery) -> None:
    """Wire the webhook pipeline into the host's Celery `app` (module docstring: what changes).

    Call it once, after `config_from_object`. It does not load the configuration itself: the
    changes are applied when the app's configuration loads (at once if it already has), so a
    host may import its celery.py while Django's settings are still being read.
    """
    signals.task_prerun.connect(_recycle_connections, dispatch_uid="webhooks.recycle_connections.prerun")
    signals.task_postrun.connect(_recycle_connections, dispatch_uid="webhooks.recycle_connections.postrun")
    if app.configured:
        _apply(app)
    else:
        # Every load applies it again (config_from_object(force=True) starts over): idempotent.
        app.on_after_configure.connect(_on_after_configure, weak=False, dispatch_uid="webhooks.configure")


def _on_after_configure(sender: Celery, **kwargs) -> None:
    _apply(sender)


def _apply(app: Celery) -> None:
    conf = app.conf
    for key, value in FORCED.items():
        if _set_by_host(conf, key) and conf[key] != value:
            logger.warning("deliveries.celery: %s=%r replaced by %r (the pipeline needs it)", key, conf[key], value)
        conf[key] = value
    accepted = list(conf.accept_content or ())
    if "json" not in accepted:
        conf.accept_content = [*accepted, "json"]
    for key, value in DEFAULTS.items():
        if not _set_by_host(conf, key):
            conf[key] = value
    conf.task_queues = _merged_queues(app)
    conf.task_routes = _merged_routes(conf.task_routes)
    conf.beat_schedule = {**beat_schedule(), **(conf.beat_schedule or {})}
    # The app builds its queue map and router once; drop any built before this ran.
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp.__dict__.pop("queues", None)
        amqp.__dict__.pop("router", None)
        amqp._rtable = None


def _set_by_host(conf, key: str) -> bool:
    """Whether the host gave `key` a value (in code or in its settings); Celery's own defaults,
    the last of the configuration's maps, do not count."""
    names = [conf._key(name) for name in conf._to_keys(key)]
    return any(name in mapping for mapping in conf.maps[:-1] for name in names)


def _merged_queues(app: Celery) -> list[Queue]:
    """The host's queues, then ours that it does not declare itself. A host that declared none
    keeps its default queue, as Celery would have made it, so its own tasks are still consumed
    by a worker without -Q."""
    host = list(app.conf.task_queues or ())
    if not host and app.conf.task_default_queue not in QUEUES:
        host = list(app.amqp.Queues(()).values())
    names = {queue.name for queue in host}
    return [*host, *(queue for queue in queue_declarations() if queue.name not in names)]


def _merged_routes(host_routes: Any) -> Any:
    """The host's routes first, then ours: Celery accepts a dict, or a sequence of routers (dicts,
    functions, names) where the first that answers wins."""
    if not host_routes:
        return dict(ROUTES)
    if isinstance(host_routes, dict):
        return {**ROUTES, **host_routes}
    routers = list(host_routes) if isinstance(host_routes, (list, tuple)) else [host_routes]
    if ROUTES in routers:
        return routers
    return [*routers, ROUTES]


def _recycle_connections(sender=None, **kwargs) -> None:
    """Around every task, what Django does around every request: close this thread's connection
    if it is broken (an error left it unusable, e.g. PostgreSQL restarted) or older than
    CONN_MAX_AGE; otherwise keep it for the next task. Eager tasks share the caller's connection."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    close_old_connections()
