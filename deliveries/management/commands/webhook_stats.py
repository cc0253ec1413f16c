"""`manage.py webhook_stats [--tenant T] [--state active|paused|disabled] [--json]`

A table of endpoints with their success rate over the last 24 hours, last success and
backlog (pending, of which due now, and failed), worst first; then the totals.
"""

import json

from django.core.management.base import BaseCommand
from django.db.models import Count, Min, Q
from django.utils import timezone

from deliveries.endpoint_stats import (
    RATE_WINDOW,
    EndpointState,
    attempt_rates,
    endpoint_state,
    filter_by_state,
    with_delivery_figures,
)
from deliveries.models import Delivery, DeliveryStatus
from endpoints.models import Endpoint

from ..operator_commands import add_common_arguments, check_permissions

URL_WIDTH = 48


class Command(BaseCommand):
    help = "Endpoints with their 24 h success rate, last success and backlog; --json to parse."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant's endpoints.")
        parser.add_argument(
            "--state",
            choices=[EndpointState.ACTIVE, EndpointState.PAUSED, EndpointState.UNVERIFIED, EndpointState.DISABLED],
            help="Only these.",
        )
        add_common_arguments(parser)

    def handle(self, *args, **options):
        check_permissions(options["as_user"], "endpoints.view_endpoint", "deliveries.view_delivery")
        now = timezone.now()
        endpoints = Endpoint.objects.order_by("pk")
        if options["tenant"] is not None:
            endpoints = endpoints.filter(tenant=options["tenant"])
        if options["state"]:
            endpoints = filter_by_state(endpoints, options["state"], now)
        endpoints = list(with_delivery_figures(endpoints))
        ids = [e.pk for e in endpoints]
        rates = attempt_rates(ids, now=now)
        due = dict(
            Delivery.objects.filter(endpoint_id__in=ids, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .order_by()
            .values_list("endpoint_id")
            .annotate(n=Count("pk"))
        )
        oldest_due = Delivery.objects.filter(
            Q(endpoint_id__in=ids), status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        ).aggregate(at=Min("next_attempt_at"))["at"]

        rows = []
        for endpoint in endpoints:
            rate = rates.get(endpoint.pk)
            rows.append(
                {
                    "id": endpoint.pk,
                    "url": endpoint.url,
                    "tenant": endpoint.tenant,
                    "state": endpoint_state(endpoint, now),
                    "disabled_reason": endpoint.disabled_reason or None,
                    "paused_until": endpoint.paused_until.isoformat()
                    if endpoint.paused_until and endpoint.paused_until > now
                    else None,
                    "attempts_24h": rate.attempts if rate else 0,
                    "success_rate_24h": round(rate.rate, 4) if rate and rate.attempts else None,
                    "last_success_at": endpoint.last_success_at.isoformat() if endpoint.last_success_at else None,
                    "pending": endpoint.pending_count,
                    "due_now": due.get(endpoint.pk, 0),
                    "failed": endpoint.failed_count,
                }
            )
        # Worst first: lowest success rate, then biggest backlog.
        rows.sort(
            key=lambda r: (
                r["success_rate_24h"] if r["success_rate_24h"] is not None else 2,
                -r["pending"] - r["failed"],
            )
        )
        totals = {
            "endpoints": len(rows),
            "pending": sum(r["pending"] for r in rows),
            "due_now": sum(r["due_now"] for r in rows),
            "failed": sum(r["failed"] for r in rows),
            "oldest_due_seconds": round((now - oldest_due).total_seconds(), 1) if oldest_due else 0,
        }
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "generated_at": now.isoformat(),
                        "window_hours": RATE_WINDOW.total_seconds() / 3600,
                        "endpoints": rows,
                        "totals": totals,
                    },
                    indent=2,
                )
            )
            return
        self._table(rows, totals, now)

    def _table(self, rows: list[dict], totals: dict, now) -> None:
        header = ("ID", "STATE", "TENANT", "URL", "SUCCESS 24H", "ATTEMPTS", "LAST SUCCESS", "PENDING", "DUE", "FAILED")
        lines = [header]
        for r in rows:
            url = r["url"] if len(r["url"]) <= URL_WIDTH else r["url"][: URL_WIDTH - 1] + "…"
            rate = f"{100 * r['success_rate_24h']:.1f} %" if r["success_rate_24h"] is not None else "-"
            last = _ago(now, r["last_success_at"])
            lines.append(
                (
                    str(r["id"]),
                    r["state"],
                    r["tenant"] or "-",
                    url,
                    rate,
                    str(r["attempts_24h"]),
                    last,
                    str(r["pending"]),
                    str(r["due_now"]),
                    str(r["failed"]),
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        numeric = {0, 4, 5, 7, 8, 9}
        for line in lines:
            cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
            self.stdout.write("  ".join(cells).rstrip())
        oldest = f", the oldest due for {totals['oldest_due_seconds']:.0f} s" if totals["due_now"] else ""
        self.stdout.write(
            f"\n{totals['endpoints']} endpoints; {totals['pending']} pending ({totals['due_now']} due now{oldest}); "
            f"{totals['failed']} failed"
        )


def _ago(now, iso: str | None) -> str:
    if not iso:
        return "never"
    from datetime import datetime

    seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
