"""`manage.py cancel_deliveries ID [ID ...] [--json] [--as-user USERNAME]`

Cancels pending deliveries by id, as the admin's Cancel does: they are not sent, and the next
delivery of each one's ordering key goes out (`webhook_stats --keys N` lists the heads that
hold keys up). Finished deliveries and those being sent right now are left alone, counted by
reason. A cancelled delivery can still be sent with Retry now.
"""

import json

from django.core.management.base import BaseCommand

from deliveries.operations import cancel_deliveries
from deliveries.permissions import permission_of

from ..operator_commands import add_common_arguments, check_permissions


class Command(BaseCommand):
    help = "Cancel pending deliveries by id: they are not sent, and the next of their ordering key goes out."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="+", type=int, metavar="ID", help="Delivery ids.")
        add_common_arguments(parser)

    def handle(self, *args, **options):
        check_permissions(options["as_user"], permission_of("cancel_delivery"))
        report = cancel_deliveries(options["ids"])
        if options["json"]:
            result = {"cancelled": len(report.queued), "cancelled_ids": report.queued, "skipped": dict(report.skipped)}
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(f"{report.summary()}.")
