"""`manage.py send_test_event ENDPOINT_ID [...] [--wait SECONDS] [--json] [--as-user USERNAME]`

Sends a `webhook.test` event to each endpoint (whatever types it subscribes to), through the
workers like any webhook. With --wait, waits for each delivery's outcome and prints it.
Exit status 1 if an endpoint refused it (disabled) or, with --wait, did not answer 2xx.
"""

import json
import time

from django.core.management.base import BaseCommand, CommandError

from deliveries.models import Delivery, DeliveryStatus
from deliveries.operations import OperationRefused, send_test_event
from deliveries.permissions import permission_of
from endpoints.models import Endpoint

from ..operator_commands import add_common_arguments, check_permissions


class Command(BaseCommand):
    help = "Send a webhook.test event to the given endpoints (by id) through the workers."

    def add_arguments(self, parser):
        parser.add_argument("endpoint_ids", nargs="+", type=int, metavar="ENDPOINT_ID")
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="Wait up to this long for the outcome of each test delivery (needs a running worker).",
        )
        add_common_arguments(parser)

    def handle(self, *args, **options):
        check_permissions(options["as_user"], permission_of("send_test_event"))
        ids = options["endpoint_ids"]
        endpoints = Endpoint.objects.in_bulk(ids)
        unknown = [str(i) for i in ids if i not in endpoints]
        if unknown:
            raise CommandError(f"no endpoint with id {', '.join(unknown)}; nothing was sent")

        results = []
        for endpoint_id in dict.fromkeys(ids):
            endpoint = endpoints[endpoint_id]
            try:
                delivery = send_test_event(endpoint)
            except OperationRefused as refusal:
                results.append({"endpoint": endpoint.pk, "url": endpoint.url, "error": str(refusal)})
                continue
            results.append(
                {
                    "endpoint": endpoint.pk,
                    "url": endpoint.url,
                    "delivery": delivery.pk,
                    "event": delivery.event.webhook_id,
                    "status": delivery.status,
                }
            )
        if options["wait"] > 0:
            self._wait(results, options["wait"])

        if options["json"]:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            for result in results:
                self.stdout.write(self._line(result, waited=options["wait"] > 0))
        failures = [r for r in results if "error" in r or (options["wait"] > 0 and r["status"] != "succeeded")]
        if failures:
            raise CommandError(f"{len(failures)} of {len(results)} test events did not get through", returncode=1)

    def _wait(self, results: list[dict], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        waiting = {r["delivery"]: r for r in results if "delivery" in r}
        while waiting:
            rows = Delivery.objects.filter(pk__in=waiting).values(
                "pk", "status", "attempt_count", "last_status_code", "last_error"
            )
            for row in rows:
                result = waiting[row["pk"]]
                result.update(
                    status=row["status"],
                    attempts=row["attempt_count"],
                    last_status_code=row["last_status_code"],
                    last_error=row["last_error"],
                )
                # Finished, or answered and now waiting for a retry: that answer is the news.
                if row["status"] != DeliveryStatus.PENDING or row["attempt_count"]:
                    del waiting[row["pk"]]
            if not waiting or time.monotonic() > deadline:
                return
            time.sleep(0.2)

    @staticmethod
    def _line(result: dict, waited: bool) -> str:
        where = f"endpoint {result['endpoint']} {result['url']}"
        if "error" in result:
            return f"{where}: not sent: {result['error']}"
        line = f"{where}: test event {result['event']} queued as delivery {result['delivery']}"
        if not waited:
            return line
        if result["status"] == DeliveryStatus.SUCCEEDED:
            return f"{line}: delivered (HTTP {result['last_status_code']})"
        if not result.get("attempts"):
            return f"{line}: no attempt yet (is a worker running?)"
        outcome = "retrying" if result["status"] == DeliveryStatus.PENDING else result["status"]  # failed, cancelled
        return f"{line}: {outcome} ({result['last_error']})"
