"""Settings, all read from the environment in this one place.

Defaults work for the quick start (SQLite file, a filesystem broker that needs no server,
DEBUG on). Production sets DATABASE_URL, CELERY_BROKER_URL, DJANGO_SECRET_KEY,
WEBHOOKS_SECRET_KEYS and DJANGO_DEBUG=0. Every WEBHOOKS_* setting is documented in the README.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from endpoints import __version__ as webhooks_version

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("WEBHOOKS_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0, true/false, yes/no or on/off, not {value!r}")


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, not {value!r}") from None


def env_list(name: str) -> list[str]:
    """A comma-separated variable as a list of its non-empty, stripped items."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_ports(name: str) -> list[int]:
    ports = []
    for item in env_list(name):
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise ImproperlyConfigured(f"{name} must be comma-separated port numbers (1-65535), not {item!r}")
        ports.append(int(item))
    return ports


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-quick-start-key-only-for-debug"
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h] or (
    ["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    # The customers' API (deliveries.api, the `api` extra): Django REST framework, drf-spectacular.
    "rest_framework",
    "drf_spectacular",
    "endpoints",
    "deliveries",
    # Development tooling of this repository (manage.py webhooks_demo, webhooks_bench); not
    # shipped in the wheel and not something a host installs.
    "bench",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webhooks_project.urls"
WSGI_APPLICATION = "webhooks_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# DATABASE_URL unset: a SQLite file for the quick start. SQLite serialises writers, so the
# worker's threads wait for the lock (timeout) and write transactions take it up front
# (IMMEDIATE) instead of failing half-way with "database is locked".
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        # propagate off: Celery's worker also logs through the root logger, which would repeat
        # every line.
        "deliveries": {
            "handlers": ["console"],
            "level": os.environ.get("WEBHOOKS_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
        "endpoints": {
            "handlers": ["console"],
            "level": os.environ.get("WEBHOOKS_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}

# --- Celery ---------------------------------------------------------------------------------
# CELERY_BROKER_URL unset: kombu's filesystem transport, a broker that needs no server (quick
# start only; it has no visibility timeout and no redelivery). Production: Redis or RabbitMQ.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "") or "filesystem://"
CELERY_BROKER_VISIBILITY_TIMEOUT = env_int("CELERY_BROKER_VISIBILITY_TIMEOUT", 3600)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The filesystem transport polls; once a second (the default) caps the demo near 8
        # messages a second.
        "polling_interval": 0.1,
    }
else:
    # Redis redelivers a message left unacknowledged longer than this. Only short countdowns
    # (WEBHOOKS_MAX_COUNTDOWN) ever sit in the broker, see deliveries/retry_policy.py.
    #
    # Socket timeouts: without them kombu's Redis client waits forever on a broker that hangs
    # (measured: publish() blocked > 40 s on a stopped Redis), and broker_connection_timeout does
    # not apply to Redis. socket_timeout stays above kombu's own 1 s polling read.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# This project has no tasks of its own: anything unrouted goes to the delivery lane, so the
# Procfile's two workers consume every queue the app declares. Queues, routes, the at-least-once
# settings and the beat jobs come from deliveries.celery.configure() (webhooks_project/celery.py).
CELERY_TASK_DEFAULT_QUEUE = "webhooks.deliveries"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The deliveries/endpoints loggers have their own handler (LOGGING above).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Webhooks -------------------------------------------------------------------------------
WEBHOOKS_REQUEST_TIMEOUT = env_float("WEBHOOKS_REQUEST_TIMEOUT", 30.0)
WEBHOOKS_CONNECT_TIMEOUT = env_float("WEBHOOKS_CONNECT_TIMEOUT", 5.0)
WEBHOOKS_ALLOW_PRIVATE_NETWORKS = env_bool("WEBHOOKS_ALLOW_PRIVATE_NETWORKS", DEBUG)

# Security (README "Security"). Fernet keys encrypting endpoint secrets and mTLS client keys at
# rest: the first encrypts, all decrypt. Unset: DEBUG uses a development key derived from
# SECRET_KEY (system check warning webhooks.W010); outside DEBUG start-up refuses (E010).
WEBHOOKS_SECRET_KEYS = env_list("WEBHOOKS_SECRET_KEYS")
# Plain http endpoints: only in DEBUG by default; production sends over https only.
WEBHOOKS_ALLOW_HTTP = env_bool("WEBHOOKS_ALLOW_HTTP", DEBUG)
# Empty: any port. Otherwise the only ports an endpoint URL may use, e.g. "443,8443".
WEBHOOKS_ALLOWED_PORTS = env_ports("WEBHOOKS_ALLOWED_PORTS")
# CA bundle (PEM file) that receivers' certificates are verified against; empty: certifi's.
WEBHOOKS_CA_BUNDLE = os.environ.get("WEBHOOKS_CA_BUNDLE", "")
# Comma-separated seconds between attempts; empty means the default (retry_policy.py).
WEBHOOKS_RETRY_SCHEDULE = os.environ.get("WEBHOOKS_RETRY_SCHEDULE", "")
WEBHOOKS_RETRY_JITTER = env_float("WEBHOOKS_RETRY_JITTER", 0.2)
WEBHOOKS_RETRY_ALL_NON_2XX = env_bool("WEBHOOKS_RETRY_ALL_NON_2XX", False)
WEBHOOKS_MAX_RETRY_AFTER = env_float("WEBHOOKS_MAX_RETRY_AFTER", 12 * 3600)
WEBHOOKS_MAX_COUNTDOWN = env_float("WEBHOOKS_MAX_COUNTDOWN", 60.0)
WEBHOOKS_MAX_PAYLOAD_BYTES = env_int("WEBHOOKS_MAX_PAYLOAD_BYTES", 256 * 1024)
WEBHOOKS_MAX_RESPONSE_BYTES = env_int("WEBHOOKS_MAX_RESPONSE_BYTES", 20 * 1024)
WEBHOOKS_SWEEP_INTERVAL = env_float("WEBHOOKS_SWEEP_INTERVAL", 15.0)
WEBHOOKS_SWEEP_BATCH_SIZE = env_int("WEBHOOKS_SWEEP_BATCH_SIZE", 500)
WEBHOOKS_REQUEUE_AFTER = env_float("WEBHOOKS_REQUEUE_AFTER", 120.0)
# Batching (README "Performance"): publish_many() fans out this many events per task; the
# deliveries one fan-out makes for one endpoint are sent by one task, this many at a time, over
# one kept-alive connection, for at most WEBHOOKS_SEND_BATCH_SECONDS before the rest go back to
# the queue (so a slow endpoint never keeps a worker thread long). 1 turns batching off.
WEBHOOKS_FANOUT_BATCH_SIZE = env_int("WEBHOOKS_FANOUT_BATCH_SIZE", 100)
WEBHOOKS_SEND_BATCH_SIZE = env_int("WEBHOOKS_SEND_BATCH_SIZE", 20)
WEBHOOKS_SEND_BATCH_SECONDS = env_float("WEBHOOKS_SEND_BATCH_SECONDS", 2.5)
# The fan-out task sends the first batch of a healthy endpoint itself (one task and one broker
# trip fewer per delivery for events with few subscribers); 0 leaves every send to send tasks.
WEBHOOKS_FANOUT_SENDS_FIRST_BATCH = env_bool("WEBHOOKS_FANOUT_SENDS_FIRST_BATCH", True)
# A claim (lease) lasts connect + request timeout + this margin; it only lapses if the worker died.
WEBHOOKS_CLAIM_MARGIN = env_float("WEBHOOKS_CLAIM_MARGIN", 60.0)
WEBHOOKS_USER_AGENT = os.environ.get("WEBHOOKS_USER_AGENT", f"django-webhook-sender/{webhooks_version}")

# Health: success rate per endpoint over sliding windows, circuit breaker, auto-disable.
WEBHOOKS_HEALTH_WINDOWS = os.environ.get("WEBHOOKS_HEALTH_WINDOWS", "900,86400")
WEBHOOKS_HEALTH_THRESHOLD = env_float("WEBHOOKS_HEALTH_THRESHOLD", 0.95)
WEBHOOKS_HEALTH_MIN_ATTEMPTS = env_int("WEBHOOKS_HEALTH_MIN_ATTEMPTS", 10)
WEBHOOKS_HEALTH_INTERVAL = env_float("WEBHOOKS_HEALTH_INTERVAL", 60.0)
WEBHOOKS_HEALTH_MAIL_ADMINS = env_bool("WEBHOOKS_HEALTH_MAIL_ADMINS", True)
WEBHOOKS_BREAKER_THRESHOLD = env_int("WEBHOOKS_BREAKER_THRESHOLD", 5)
WEBHOOKS_BREAKER_COOLDOWN = env_float("WEBHOOKS_BREAKER_COOLDOWN", 60.0)
WEBHOOKS_AUTO_DISABLE_AFTER = env_float("WEBHOOKS_AUTO_DISABLE_AFTER", 5 * 86400)

# Retention: a daily purge of old deliveries and attempts.
WEBHOOKS_RETENTION_SUCCEEDED_DAYS = env_float("WEBHOOKS_RETENTION_SUCCEEDED_DAYS", 30)
WEBHOOKS_RETENTION_FAILED_DAYS = env_float("WEBHOOKS_RETENTION_FAILED_DAYS", 90)
WEBHOOKS_RETENTION_BATCH_SIZE = env_int("WEBHOOKS_RETENTION_BATCH_SIZE", 1000)

# Endpoint verification (README "Endpoint verification").
WEBHOOKS_VERIFY_API_ENDPOINTS = env_bool("WEBHOOKS_VERIFY_API_ENDPOINTS", True)
WEBHOOKS_VERIFICATION_ORIGIN = os.environ.get("WEBHOOKS_VERIFICATION_ORIGIN", "")
WEBHOOKS_VERIFICATION_SCHEDULE = os.environ.get("WEBHOOKS_VERIFICATION_SCHEDULE", "60,300,900,3600,3600,3600,86400")

# Model hooks and the event type catalog: Python dicts set here (not environment variables).
WEBHOOKS_MODEL_HOOKS: dict = {}  # "app_label.Model" -> hook (README "Model hooks")
WEBHOOKS_EVENT_TYPES: dict = {}  # event type -> {"description", "schema"}; empty accepts every type

# The customers' API at /api/webhooks/: the function mapping a request to its tenant (a dotted
# path); unset, the API refuses every request.
WEBHOOKS_API_TENANT = os.environ.get("WEBHOOKS_API_TENANT") or None
# 1: each API route that changes state also needs the Django permission admin requires for it.
WEBHOOKS_API_CHECK_PERMISSIONS = env_bool("WEBHOOKS_API_CHECK_PERMISSIONS", False)

# Metrics: each worker process serves Prometheus metrics on this port when set (web: /metrics).
WEBHOOKS_WORKER_METRICS_PORT = env_int("WEBHOOKS_WORKER_METRICS_PORT", 0)

ADMINS = [tuple(a.split(":", 1)) for a in os.environ.get("DJANGO_ADMINS", "").split(",") if ":" in a]
EMAIL_BACKEND = os.environ.get("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")

# Invalid values and broken invariants between these settings are system checks with ids
# (deliveries/checks.py), not errors here: every host gets them.
