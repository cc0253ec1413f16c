from django.apps import AppConfig


class BenchConfig(AppConfig):
    """Development tooling as a Django app: `manage.py webhooks_demo` (`make demo`) and
    `manage.py webhooks_bench`. Installed by webhooks_project/settings.py only; the wheel does
    not ship it, and the installable apps never import it."""

    name = "bench"
    verbose_name = "Webhooks demo and benchmark"
