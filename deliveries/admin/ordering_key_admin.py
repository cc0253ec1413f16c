"""Ordering keys: one chain per endpoint and key (deliveries.ordering), its backlog, and the
delivery the rest of it waits for. Read-only: an operator acts on that delivery (Retry now,
Cancel) from its own page."""

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator

from ..backlog import ChainFigures, blocking_heads, chain_figures
from ..models import Delivery, DeliveryStatus, OrderingKey, ParkedReason
from .common import ReadOnlyHistoryAdmin
from .filters import EndpointIdFilter
from .waiting import waiting_html


def chain_deliveries_url(endpoint_id: int, key: str, **params: str) -> str:
    """The deliveries list, narrowed to one chain (and `params`)."""
    return (
        reverse("admin:deliveries_delivery_changelist")
        + "?"
        + urlencode({"endpoint": endpoint_id, "key": key, **params})
    )


class OrderingKeyChangeList(ChangeList):
    """Adds each listed chain's pending counts and its head: two queries for the whole page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)
        attach_chain_state(self.result_list)


def attach_chain_state(rows: list[OrderingKey]) -> None:
    chains = [(row.endpoint_id, row.key) for row in rows]
    figures, heads = chain_figures(chains), blocking_heads(chains)
    for row in rows:
        row.figures = figures.get((row.endpoint_id, row.key), ChainFigures())
        row.head = heads.get((row.endpoint_id, row.key))
        if row.head is not None:
            row.head.endpoint = row.endpoint  # the same endpoint: no query to say "until" of its breaker


class ChainStateFilter(admin.SimpleListFilter):
    title = "deliveries"
    parameter_name = "chain"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [
            ("blocked", "Some wait behind an earlier one"),
            ("pending", "Some pending"),
            ("idle", "None pending"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        pending = Delivery.objects.filter(
            endpoint_id=OuterRef("endpoint_id"), ordering_key=OuterRef("key"), status=DeliveryStatus.PENDING
        )
        if self.value() == "blocked":
            return queryset.filter(Exists(pending.filter(parked_reason=ParkedReason.ORDERING)))
        if self.value() == "pending":
            return queryset.filter(Exists(pending))
        if self.value() == "idle":
            return queryset.filter(~Exists(pending))
        return queryset


@admin.register(OrderingKey)
class OrderingKeyAdmin(ReadOnlyHistoryAdmin):
    list_display = ("key", "endpoint_display", "last_sequence", "pending", "head_display", "head_state")
    list_filter = (ChainStateFilter, EndpointIdFilter)
    list_select_related = ("endpoint",)
    search_fields = ("=key",)  # see get_search_results
    search_help_text = "An ordering key, exactly, or its beginning followed by * (order-7*)."
    ordering = ("-id",)
    sortable_by = ()  # sorting a table of millions of keys reads all of them
    change_list_template = "deliveries/admin/change_list.html"
    fields = ("key", "endpoint_display", "last_sequence", "pending", "head_display", "head_state")
    readonly_fields = fields

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        # A chain is a view of deliveries: whoever may see deliveries may see their keys.
        return super().has_view_permission(request, obj) or request.user.has_perm("deliveries.view_delivery")

    def get_changelist(self, request: HttpRequest, **kwargs):
        return OrderingKeyChangeList

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        row = super().get_object(request, object_id, from_field)
        if row is not None:
            attach_chain_state([row])
        return row

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.endswith("*"):
            return queryset.filter(key__startswith=term[:-1]), False
        return queryset.filter(key=term), False

    @admin.display(description="endpoint")
    def endpoint_display(self, row: OrderingKey) -> str:
        endpoint = row.endpoint
        return format_html(
            '<a href="{}" title="{}">#{} {}</a>',
            reverse("admin:endpoints_endpoint_change", args=[endpoint.pk]),
            endpoint.url,
            endpoint.pk,
            Truncator(endpoint.url).chars(40),
        )

    @admin.display(description="pending")
    def pending(self, row: OrderingKey) -> str:
        figures = row.figures
        if not figures.pending:
            return "0"
        return format_html(
            '<a href="{}">{}</a><br><span class="quiet">{} waiting behind the head</span>',
            chain_deliveries_url(row.endpoint_id, row.key, status__exact=DeliveryStatus.PENDING),
            figures.pending,
            figures.behind,
        )

    @admin.display(description="head (the rest waits for it)")
    def head_display(self, row: OrderingKey) -> str:
        head = row.head
        if head is None:
            return "-"
        return format_html(
            '<a href="{}" class="webhooks-blocking-head">#{}</a> <span class="quiet">sequence {}</span>',
            reverse("admin:deliveries_delivery_change", args=[head.pk]),
            head.pk,
            head.sequence,
        )

    @admin.display(description="head's state")
    def head_state(self, row: OrderingKey) -> str:
        head = row.head
        if head is None:
            return "-"
        attempts = f"{head.attempt_count} attempt{'s' if head.attempt_count != 1 else ''}"
        error = Truncator(head.last_error).chars(60) or "no error"
        return format_html(
            '{}<br><span class="quiet">{}, {}</span>', waiting_html(head, timezone.now()), attempts, error
        )
