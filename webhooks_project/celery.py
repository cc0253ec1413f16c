"""This project's Celery app: the usual Django boilerplate plus the one line every host of the
webhook apps adds (deliveries/celery.py says what it sets: queues, routes, the at-least-once
settings, connection recycling and the beat jobs)."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from deliveries.celery import configure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
# The quick start's broker writes whole messages only (webhooks_project/filesystem_broker.py).
TRANSPORT_ALIASES["filesystem"] = "webhooks_project.filesystem_broker:Transport"

app = Celery("webhooks_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
configure(app)
