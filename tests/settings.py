"""Test settings: the real services, never the quick-start defaults.

PostgreSQL and Redis come from DATABASE_URL / CELERY_BROKER_URL, defaulting to the local
servers; the suite fails loudly (tests/conftest.py) when they do not answer.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE_NETWORKS", "1")  # the receivers are on loopback
os.environ.setdefault("DJANGO_DEBUG", "1")

from webhooks_project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A fixed key for encrypting endpoint secrets in tests, made once with Fernet.generate_key().
# It protects nothing: test databases hold only test secrets.
WEBHOOKS_SECRET_KEYS = ["RmnYZiSad7J4jTqxryARhuTyIa61XLu7uIKMznfNGCQ="]
LOGGING["loggers"]["deliveries"]["level"] = "WARNING"  # noqa: F405

# A host app with models wired to webhooks (tests/hostapp, tests/test_hooks.py).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.hostapp"]  # noqa: F405
WEBHOOKS_MODEL_HOOKS = {
    "hostapp.Order": {
        "events": {"created": "order.created", "updated": "order.updated", "deleted": "order.deleted"},
        "filter": "tests.hostapp.webhooks.is_not_draft",
        "tenant": "tenant",
    },
}

# The customers' API (tests/test_api_*.py): a user "acme-alice" acts for tenant "acme".
WEBHOOKS_API_TENANT = "tests.api_tenancy.tenant_for_request"
