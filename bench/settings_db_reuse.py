"""An experiment of the benchmark, not a configuration to copy as is: the project's settings
plus Celery's CELERY_DB_REUSE_MAX, so a worker thread keeps its database connection across
tasks instead of opening one per task. Run it with
`--worker-env DJANGO_SETTINGS_MODULE=bench.settings_db_reuse`.

Celery then never closes a broken connection either (it does not call Django's
close_old_connections()); a real fix would do that around each task (README "Benchmark")."""

from webhooks_project.settings import *  # noqa: F403

CELERY_DB_REUSE_MAX = 1000
