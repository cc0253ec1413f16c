"""`manage.py webhooks_retention [--report-only] [--json]`: the daily retention purge, now.

Runs in this process (no worker needed) with the same function beat's `deliveries.retention`
task runs, and prints what it deleted; `--report-only` prints what it would delete and deletes
nothing.
"""

import json

from django.core.management.base import BaseCommand

from deliveries.retention import purge_old_deliveries
from endpoints.app_settings import webhook_settings

ROWS = (
    ("succeeded_deliveries", "Succeeded deliveries"),
    ("failed_deliveries", "Failed deliveries"),
    ("cancelled_deliveries", "Cancelled deliveries"),
    ("attempts", "Attempts of those deliveries"),
    ("events", "Events without deliveries"),
    ("expired_secrets", "Expired endpoint secrets"),
    ("ordering_keys", "Idle ordering keys without deliveries"),
)


class Command(BaseCommand):
    help = (
        "Purge old succeeded/failed/cancelled deliveries, their attempts, old events and expired secrets, in batches."
    )

    def add_arguments(self, parser):
        parser.add_argument("--report-only", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")

    def handle(self, *args, **options):
        report = purge_old_deliveries(report_only=options["report_only"])
        counts = report.as_dict()
        if options["json"]:
            self.stdout.write(json.dumps(counts, sort_keys=True))
            return
        verb = "Would delete" if report.report_only else "Deleted"
        self.stdout.write(f"{verb} (batches of {webhook_settings.RETENTION_BATCH_SIZE}):")
        succeeded_days = webhook_settings.RETENTION_SUCCEEDED_DAYS
        failed_days = webhook_settings.RETENTION_FAILED_DAYS
        ages = {
            "succeeded_deliveries": succeeded_days,
            "failed_deliveries": failed_days,
            "cancelled_deliveries": failed_days,
            "events": max(succeeded_days, failed_days),
            "ordering_keys": max(succeeded_days, failed_days),
        }
        width = max(len(label) for _, label in ROWS)
        for key, label in ROWS:
            age = f"  older than {ages[key]:g} days" if key in ages else ""
            self.stdout.write(f"  {label:<{width}}  {counts[key]:>10}{age}")
