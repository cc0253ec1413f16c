"""Events: what happened, to whom it went. Read-only."""

import hashlib
import json

from django.contrib import admin
from django.contrib.admin import DateFieldListFilter
from django.contrib.admin.views.main import ChangeList
from django.db.models import Q, QuerySet, Subquery
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from ..endpoint_stats import deliveries_with_status
from ..models import DeliveryStatus, Event
from ..sending import render_body
from .common import ReadOnlyHistoryAdmin, parse_event_id, plural, pretty_json
from .filters import EventTypeFilter, TenantFilter
from .waiting import attach_blocking_heads, waiting_html

DELIVERIES_SHOWN = 100


def _deliveries_by_status(status: str) -> Subquery:
    return deliveries_with_status("event", status)


class EventChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters=None) -> QuerySet:
        # A payload can be 256 kB (twice: text and jsonb); the list never shows one.
        return super().get_queryset(request, exclude_parameters).defer("payload", "payload_json")


@admin.register(Event)
class EventAdmin(ReadOnlyHistoryAdmin):
    list_display = ("webhook_id", "type", "tenant", "created_at", "delivery_summary")
    list_filter = (EventTypeFilter, TenantFilter, ("created_at", DateFieldListFilter))
    search_fields = ("=idempotency_key",)  # and the id; see get_search_results
    search_help_text = "An event id (evt_… or UUID) or an idempotency key, exactly."
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    change_form_template = "deliveries/admin/event_change_form.html"
    change_list_template = "deliveries/admin/change_list.html"
    fieldsets = (
        (None, {"fields": ("webhook_id", "type", "tenant", "idempotency_key", "created_at", "fanned_out_at")}),
        ("Payload", {"fields": ("body_sent", "payload_pretty")}),
        ("Deliveries", {"fields": ("deliveries_table",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                pending_count=_deliveries_by_status(DeliveryStatus.PENDING),
                succeeded_count=_deliveries_by_status(DeliveryStatus.SUCCEEDED),
                failed_count=_deliveries_by_status(DeliveryStatus.FAILED),
                cancelled_count=_deliveries_by_status(DeliveryStatus.CANCELLED),
            )
        )

    def get_changelist(self, request: HttpRequest, **kwargs):
        return EventChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        event_id = parse_event_id(term)
        condition = Q(idempotency_key=term)
        if event_id is not None:
            condition |= Q(pk=event_id)
        return queryset.filter(condition), False

    @admin.display(description="webhook id", ordering="created_at")
    def webhook_id(self, event: Event) -> str:
        return event.webhook_id

    @admin.display(description="deliveries")
    def delivery_summary(self, event: Event) -> str:
        parts = [
            (event.succeeded_count, "succeeded", "#2e7d32"),
            (event.failed_count, "failed", "#c62828"),
            (event.pending_count, "pending", "#8a6d00"),
            (event.cancelled_count, "cancelled", "#6b6b6b"),
        ]
        shown = [(color, n, label) for n, label, color in parts if n]
        if not shown:
            return "none"
        url = reverse("admin:deliveries_delivery_changelist") + f"?event={event.webhook_id}"
        return format_html(
            '<a href="{}">{}</a>', url, format_html_join(", ", '<span style="color:{}">{} {}</span>', shown)
        )

    @admin.display(description="body sent")
    def body_sent(self, event: Event) -> str:
        """The SHA-256 and size of the exact body bytes every attempt of this event sends: each
        attempt records the SHA-256 of what it sent (delivery pages), which must match."""
        body = render_body(event)
        return format_html(
            "SHA-256 <code>{}</code>, {} bytes, the same for every attempt (each attempt's own record "
            "is on its delivery's page)",
            hashlib.sha256(body).hexdigest(),
            f"{len(body):,}",
        )

    @admin.display(description="payload")
    def payload_pretty(self, event: Event) -> str:
        # Indented from the text that is sent: keys in the published order, numbers as written
        # (json.loads keeps the order; a float written again is the same shortest repr).
        return pretty_json(event.payload if event.payload_json is None else json.loads(event.payload_json))

    @admin.display(description="deliveries")
    def deliveries_table(self, event: Event) -> str:
        deliveries = list(event.deliveries.select_related("endpoint").order_by("pk")[: DELIVERIES_SHOWN + 1])
        total = len(deliveries)
        deliveries = deliveries[:DELIVERIES_SHOWN]
        now = timezone.now()
        attach_blocking_heads(deliveries, now)
        for delivery in deliveries:
            delivery.waiting = waiting_html(delivery, now)
        if total > DELIVERIES_SHOWN:
            total = event.deliveries.count()
        return render_to_string(
            "deliveries/admin/event_deliveries.html",
            {
                "deliveries": deliveries,
                "total": total,
                "total_text": plural(total, "delivery", "deliveries"),
                "all_url": reverse("admin:deliveries_delivery_changelist") + f"?event={event.webhook_id}",
            },
        )
