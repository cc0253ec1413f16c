from django.apps import AppConfig


class HostAppConfig(AppConfig):
    """A stand-in for the host product, whose models publish webhooks through model hooks."""

    name = "tests.hostapp"
    label = "hostapp"
    default_auto_field = "django.db.models.BigAutoField"
