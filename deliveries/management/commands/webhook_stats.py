"""`manage.py webhook_stats [--tenant T] [--state active|paused|disabled] [--keys N] [--json]`

A table of endpoints with their success rate over the last 24 hours, last success and
backlog, worst first: pending (of which due now, waiting for a retry, waiting for the rate
limit, parked) and failed, with a line under an endpoint saying why its deliveries are parked
(circuit breaker, ordering, disabled, unverified) and its rate limit (and the lower one in
force for a while after a 429); then the totals.
`--keys N` adds the N ordering keys with the most deliveries waiting behind their head, and
that head (the delivery to retry or cancel to let the key move on).
"""

import json

from django.core.management.base import BaseCommand
from django.db.models import Min, Q
from django.utils import timezone

from deliveries.backlog import (
    PARKED,
    Waiting,
    backlog_by_endpoint,
    blocked_chains,
    blocking_heads,
    lowered_rate_of,
    rate_limit_of,
    rate_limit_text,
    waiting_of,
)
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
# The time-bound waits counted per endpoint ("waiting"); the other waits are "parked" by reason.
TIMED = (Waiting.DUE, Waiting.SENDING, Waiting.RETRY, Waiting.RATE_LIMIT)


class Command(BaseCommand):
    help = "Endpoints with their 24 h success rate, last success and backlog; --json to parse."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant's endpoints.")
        parser.add_argument(
            "--state",
            choices=[EndpointState.ACTIVE, EndpointState.PAUSED, EndpointState.UNVERIFIED, EndpointState.DISABLED],
            help="Only these.",
        )
        parser.add_argument(
            "--keys",
            type=int,
            default=0,
            metavar="N",
            help="Also list the N ordering keys with the most deliveries waiting behind their head.",
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
        backlogs = backlog_by_endpoint(ids, now)
        oldest_due = Delivery.objects.filter(
            Q(endpoint_id__in=ids), status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        ).aggregate(at=Min("next_attempt_at"))["at"]

        rows = []
        for endpoint in endpoints:
            rate = rates.get(endpoint.pk)
            backlog = backlogs[endpoint.pk]
            limit, lowered = rate_limit_of(endpoint), lowered_rate_of(endpoint)
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
                    "due_now": backlog[Waiting.DUE] + backlog[Waiting.SENDING],
                    "waiting": {state.value: backlog[state] for state in TIMED},
                    "parked": {state.value: backlog[state] for state in PARKED},
                    "failed": endpoint.failed_count,
                    "rate_limit": _rate_limit(limit, lowered),
                    "rate_limit_text": rate_limit_text(endpoint),
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
            "parked": {state.value: sum(r["parked"][state] for r in rows) for state in PARKED},
            "failed": sum(r["failed"] for r in rows),
            "oldest_due_seconds": round((now - oldest_due).total_seconds(), 1) if oldest_due else 0,
        }
        keys = _blocked_keys(options["keys"], ids if options["tenant"] is not None or options["state"] else None, now)
        if options["json"]:
            report = {
                "generated_at": now.isoformat(),
                "window_hours": RATE_WINDOW.total_seconds() / 3600,
                "endpoints": rows,
                "totals": totals,
            }
            if options["keys"]:
                report["blocked_keys"] = keys
            self.stdout.write(json.dumps(report, indent=2))
            return
        self._table(rows, totals, now)
        if options["keys"]:
            self._keys(keys)

    def _table(self, rows: list[dict], totals: dict, now) -> None:
        header = (
            "ID", "STATE", "TENANT", "URL", "SUCCESS 24H", "ATTEMPTS", "LAST SUCCESS",
            "PENDING", "DUE", "RETRY", "RATE LIMITED", "PARKED", "FAILED",
        )  # fmt: skip
        lines = [(header, "")]
        for r in rows:
            url = r["url"] if len(r["url"]) <= URL_WIDTH else r["url"][: URL_WIDTH - 1] + "…"
            rate = f"{100 * r['success_rate_24h']:.1f} %" if r["success_rate_24h"] is not None else "-"
            cells = (
                str(r["id"]),
                r["state"],
                r["tenant"] or "-",
                url,
                rate,
                str(r["attempts_24h"]),
                _ago(now, r["last_success_at"]),
                str(r["pending"]),
                str(r["due_now"]),
                str(r["waiting"][Waiting.RETRY]),
                str(r["waiting"][Waiting.RATE_LIMIT]),
                str(sum(r["parked"].values())),
                str(r["failed"]),
            )
            lines.append((cells, _why(r)))
        widths = [max(len(cells[i]) for cells, _ in lines) for i in range(len(header))]
        numeric = {0, 4, 5, *range(7, len(header))}
        for cells, why in lines:
            aligned = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(cells)]
            self.stdout.write("  ".join(aligned).rstrip())
            if why:
                self.stdout.write(f"{'':>{widths[0]}}  {why}")
        oldest = f", the oldest due for {totals['oldest_due_seconds']:.0f} s" if totals["due_now"] else ""
        parked = sum(totals["parked"].values())
        parked_text = f"; {parked} parked ({_parked_words(totals['parked'])})" if parked else ""
        self.stdout.write(
            f"\n{totals['endpoints']} endpoints; {totals['pending']} pending ({totals['due_now']} due now{oldest})"
            f"{parked_text}; {totals['failed']} failed"
        )

    def _keys(self, keys: list[dict]) -> None:
        if not keys:
            self.stdout.write("\nNo ordering key has deliveries waiting behind an earlier one.")
            return
        self.stdout.write("\nOrdering keys with deliveries waiting behind their head (retry or cancel the head):")
        header = ("ENDPOINT", "KEY", "WAITING", "HEAD", "SEQUENCE", "HEAD WAITS FOR", "ATTEMPTS", "LAST ERROR")
        lines = [header]
        for entry in keys:
            head = entry["head"] or {}
            lines.append(
                (
                    str(entry["endpoint"]),
                    entry["key"],
                    str(entry["waiting_behind"]),
                    str(head.get("id", "-")),
                    str(head.get("sequence", "-")),
                    Waiting(head["waiting"]).label.lower() if head.get("waiting") else "none pending",
                    str(head.get("attempts", "-")),
                    (head.get("last_error") or "-")[:60],
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        numeric = {0, 2, 3, 4, 6}
        for line in lines:
            cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(line)]
            self.stdout.write("  ".join(cells).rstrip())


def _rate_limit(limit: tuple[int, float] | None, lowered: tuple | None) -> dict | None:
    """The configured limit, the one in force (lower for a while after a 429) and that 429's time."""
    if limit is None:
        return None
    effective, lowered_at = lowered or (limit[0], None)
    return {
        "requests": limit[0],
        "period_seconds": limit[1],
        "effective_requests": effective,
        "lowered_at": lowered_at.isoformat() if lowered_at else None,
    }


PARKED_WORDS = {
    Waiting.BREAKER: "circuit breaker",
    Waiting.ORDERING: "behind their ordering key",
    Waiting.DISABLED: "endpoint disabled",
    Waiting.UNVERIFIED: "endpoint not verified",
    Waiting.UNRECORDED: "no reason recorded",
}


def _parked_words(parked: dict[str, int]) -> str:
    return ", ".join(f"{parked[state]} {PARKED_WORDS[state]}" for state in PARKED if parked[state])


def _why(row: dict) -> str:
    """The line under an endpoint: why its deliveries are parked, and its rate limit."""
    parts = []
    if any(row["parked"].values()):
        parts.append(f"parked: {_parked_words(row['parked'])}")
    if row["rate_limit_text"]:
        parts.append(f"rate limit {row['rate_limit_text']}")
    return "; ".join(parts)


def _blocked_keys(limit: int, endpoint_ids: list[int] | None, now) -> list[dict]:
    """The `limit` ordering keys with the most deliveries waiting behind their head, and that head."""
    if limit <= 0:
        return []
    chains = blocked_chains(limit, endpoint_ids)
    heads = blocking_heads(chain for chain, _ in chains)
    keys = []
    for chain, waiting in chains:
        head = heads.get(chain)
        keys.append(
            {
                "endpoint": chain[0],
                "key": chain[1],
                "waiting_behind": waiting,
                "head": None
                if head is None
                else {
                    "id": head.pk,
                    "sequence": head.sequence,
                    "status": head.status,
                    "waiting": waiting_of(head, now).value,
                    "attempts": head.attempt_count,
                    "last_error": head.last_error or None,
                },
            }
        )
    return keys


def _ago(now, iso: str | None) -> str:
    if not iso:
        return "never"
    from datetime import datetime

    seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
