"""Settings of a host product: its own choices, and only the webhook settings it needs to change.

The test that runs this project passes the database, the broker and a key in the environment.
"""

import os

SECRET_KEY = "host-project-test-key"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "host.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "rest_framework",  # the webhooks API for the shop's customers (the [api] extra)
    "drf_spectacular",
    "endpoints",
    "deliveries",
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "USER": "postgres",
        "NAME": os.environ["HOST_DATABASE_NAME"],
    }
}

CELERY_BROKER_URL = os.environ["HOST_BROKER_URL"]
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# The webhook settings this host changes; every other one keeps the app's default.
WEBHOOKS_SECRET_KEYS = [os.environ["HOST_SECRET_KEY"]]
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True  # its receiver listens on 127.0.0.1
WEBHOOKS_ALLOW_HTTP = True
WEBHOOKS_MODEL_HOOKS = {"shop.Order": {"events": {"created": "order.created"}, "tenant": "account"}}
WEBHOOKS_API_TENANT = "shop.webhooks.tenant_for_request"
