"""The host's Celery app: the usual Django boilerplate, plus one line for webhooks."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "host.settings")

app = Celery("host")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from deliveries.celery import configure  # noqa: E402

configure(app)
