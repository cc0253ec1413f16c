from django.apps import AppConfig


class DeliveriesConfig(AppConfig):
    name = "deliveries"
    verbose_name = "Webhook deliveries"

    def ready(self) -> None:
        from . import checks, hooks, receivers  # noqa: F401  (registers system checks and signal receivers)
        from .metrics import connect_worker_signals

        connect_worker_signals()
        hooks.connect_configured_hooks()
