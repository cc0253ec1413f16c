"""`manage.py retry_failed [--endpoint ID ...] [--since WHEN | --all] [--dry-run] [--json]`

Sends failed deliveries (dead letters) again now, as manual attempts with their webhook id,
in batches of 1,000, with a progress bar on a terminal. `--since` (6h, 2d, 2026-11-23T09:30)
takes those whose last attempt failed at or after that time. `--dry-run` counts them per
endpoint and changes nothing. Without --endpoint or --since, --all is required.
"""

import json

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from deliveries.models import AttemptTrigger
from deliveries.operations import failed_deliveries, ids_by_keyset, retry_deliveries
from deliveries.permissions import permission_of
from endpoints.models import Endpoint

from ..operator_commands import add_common_arguments, check_permissions, parse_since
from ..progress import ProgressBar


class Command(BaseCommand):
    help = "Retry failed deliveries now (manual attempts), by endpoint and/or failure time; --dry-run to count."

    def add_arguments(self, parser):
        parser.add_argument(
            "--endpoint", type=int, action="append", metavar="ID", help="Only this endpoint's (repeatable)."
        )
        parser.add_argument("--since", metavar="WHEN", help="Only those that failed at or after: 6h, 2d, an ISO time.")
        parser.add_argument("--all", action="store_true", help="Every failed delivery, when no filter is given.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be retried; change nothing.")
        add_common_arguments(parser, progress=True)

    def handle(self, *args, **options):
        check_permissions(options["as_user"], permission_of("retry_delivery"))
        endpoint_ids = options["endpoint"]
        if not (endpoint_ids or options["since"] or options["all"]):
            raise CommandError("say which failed deliveries: --endpoint ID, --since WHEN, or --all")
        if endpoint_ids:
            missing = sorted(
                set(endpoint_ids) - set(Endpoint.objects.filter(pk__in=endpoint_ids).values_list("pk", flat=True))
            )
            if missing:
                raise CommandError(f"no endpoint with id {', '.join(map(str, missing))}; nothing was retried")
        since = parse_since(options["since"]) if options["since"] else None
        failed = failed_deliveries(endpoint_ids, since)
        selection = {"endpoints": endpoint_ids or "all", "since": since.isoformat() if since else None}

        if options["dry_run"]:
            self._dry_run(failed, selection, options["json"])
            return

        total = failed.count()
        with ProgressBar(total, "retrying", stream=self.stderr, enabled=options["progress"]) as bar:
            report = retry_deliveries(ids_by_keyset(failed), AttemptTrigger.MANUAL, progress=bar.update)
        if options["json"]:
            result = {**selection, "dry_run": False, **report.as_dict()}
            del result["queued_ids"]
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(f"{report.summary()}.")

    def _dry_run(self, failed, selection: dict, as_json: bool) -> None:
        rows = list(
            failed.order_by()
            .values("endpoint_id", "endpoint__url", "endpoint__is_active")
            .annotate(failed=Count("pk"))
            .order_by("-failed", "endpoint_id")
        )
        total = sum(row["failed"] for row in rows)
        if as_json:
            by_endpoint = [
                {
                    "endpoint": r["endpoint_id"],
                    "url": r["endpoint__url"],
                    "active": r["endpoint__is_active"],
                    "failed": r["failed"],
                }
                for r in rows
            ]
            self.stdout.write(
                json.dumps({**selection, "dry_run": True, "would_retry": total, "by_endpoint": by_endpoint}, indent=2)
            )
            return
        self.stdout.write(
            f"Would retry {total} failed {'delivery' if total == 1 else 'deliveries'} (dry run: nothing changed)."
        )
        for row in rows:
            note = "" if row["endpoint__is_active"] else "  (endpoint disabled: skipped unless enabled)"
            self.stdout.write(f"  endpoint {row['endpoint_id']:>6}  {row['failed']:>8}  {row['endpoint__url']}{note}")
