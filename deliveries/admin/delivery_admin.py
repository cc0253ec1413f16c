"""Deliveries: one event to one endpoint, every attempt, why it waits, Retry now and Cancel."""

from django.contrib import admin, messages
from django.contrib.admin import DateFieldListFilter
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator

from .. import ordering
from ..backlog import chain_figures
from ..models import AttemptTrigger, Delivery, DeliveryStatus, Event
from ..operations import RetryReport, cancel_deliveries, ids_by_keyset, retry_deliveries
from .common import (
    PermissionCheckedActionsMixin,
    ReadOnlyHistoryAdmin,
    parse_event_id,
    pretty_json,
    record_in_history,
    user_may,
)
from .filters import (
    DeliveryEventTypeFilter,
    DeliveryTenantFilter,
    EndpointIdFilter,
    EventIdFilter,
    OrderingKeyFilter,
    WaitingFilter,
)
from .waiting import attach_blocking_heads, waiting_html

HISTORY_FIELDS = ("pk", "event_id", "endpoint_id")  # what str(delivery) needs
STATUS_COLORS = {
    DeliveryStatus.SUCCEEDED: "#2e7d32",
    DeliveryStatus.FAILED: "#c62828",
    DeliveryStatus.PENDING: "#8a6d00",
    DeliveryStatus.CANCELLED: "#6b6b6b",  # neutral: an operator's decision, not a failure
}
CANCELLED_MESSAGE = "Cancelled (not to be sent)."  # in the History of each cancelled delivery
CANCEL_NOTE = (
    "it will not be sent, and the next delivery of its ordering key, if any, goes out (Retry now sends it after all)."
)


def _cancel_summary(report: RetryReport) -> str:
    if not report.queued:
        return f"{report.summary()}."
    return (
        f"{report.summary()}. They will not be sent, and the next delivery of each one's ordering key, if any, "
        "goes out (Retry now sends one after all)."
    )


def status_badge(status: str) -> str:
    return format_html(
        '<strong class="webhooks-status webhooks-status-{}" style="color:{}">{}</strong>',
        status,
        STATUS_COLORS.get(status, "inherit"),
        status,
    )


class DeliveryChangeList(ChangeList):
    """Looks up, in one query for the whole page, the delivery each row waiting behind its
    ordering key is waiting for."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)
        attach_blocking_heads(self.result_list, timezone.now())


@admin.register(Delivery)
class DeliveryAdmin(PermissionCheckedActionsMixin, ReadOnlyHistoryAdmin):
    list_display = (
        "id",
        "status_display",
        "event_display",
        "endpoint_display",
        "attempts",
        "last_result",
        "waiting_display",
        "created_at",
    )
    list_filter = (
        "status",
        WaitingFilter,
        EndpointIdFilter,
        DeliveryTenantFilter,
        DeliveryEventTypeFilter,
        EventIdFilter,
        OrderingKeyFilter,
        ("created_at", DateFieldListFilter),
    )
    list_select_related = ("event", "endpoint")
    search_fields = ("=id",)  # see get_search_results
    search_help_text = "A delivery id, an event id (evt_… or UUID) or an event's idempotency key, exactly."
    ordering = ("-id",)
    sortable_by = ("id",)
    actions = ["retry_now", "cancel_pending"]
    change_form_template = "deliveries/admin/delivery_change_form.html"
    change_list_template = "deliveries/admin/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status_display",
                    "event_link",
                    "endpoint_link",
                    "attempt_count",
                    "last_result",
                    "waiting_detail",
                    "created_at",
                    "updated_at",
                )
            },
        ),
        ("Ordering", {"fields": ("ordering_key", "sequence", "chain_display")}),
        ("Attempts", {"fields": ("attempt_history",)}),
        (
            "Scheduling",
            {"classes": ("collapse",), "fields": ("next_attempt_at", "parked_reason", "locked_until", "queued_until")},
        ),
    )
    # Everything shown is read-only: operators act through the actions, never by editing.
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    def get_fieldsets(self, request: HttpRequest, obj=None):
        # The ordering section only for deliveries of an ordered event.
        if obj is not None and obj.ordering_key is not None:
            return self.fieldsets
        return tuple(fieldset for fieldset in self.fieldsets if fieldset[0] != "Ordering")

    def get_changelist(self, request: HttpRequest, **kwargs):
        return DeliveryChangeList

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # A payload can be 256 kB (twice: text and jsonb); a page of 100 deliveries never needs one.
        return (
            super()
            .get_queryset(request)
            .select_related("event", "endpoint")
            .defer("event__payload", "event__payload_json")
        )

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(pk__in=[])
        event_id = parse_event_id(term)
        if event_id is not None:
            condition |= Q(event_id=event_id)
        # Looked up first, so the deliveries query stays on its own indexes.
        keyed = list(Event.objects.filter(idempotency_key=term).values_list("pk", flat=True)[:100])
        if keyed:
            condition |= Q(event_id__in=keyed)
        if term.isdigit():
            condition |= Q(pk=int(term))
        return queryset.filter(condition), False

    # --- columns and fields -------------------------------------------------------------

    @admin.display(description="status")
    def status_display(self, delivery: Delivery) -> str:
        return status_badge(delivery.status)

    @admin.display(description="event")
    def event_display(self, delivery: Delivery) -> str:
        return format_html('{}<br><span class="quiet">{}</span>', delivery.event.type, delivery.event.webhook_id)

    @admin.display(description="endpoint")
    def endpoint_display(self, delivery: Delivery) -> str:
        endpoint = delivery.endpoint
        tenant = f"tenant {endpoint.tenant}" if endpoint.tenant else "no tenant"
        return format_html(
            '<span title="{}">#{} {}</span><br><span class="quiet">{}</span>',
            endpoint.url,
            endpoint.pk,
            Truncator(endpoint.url).chars(45),
            tenant,
        )

    @admin.display(description="event")
    def event_link(self, delivery: Delivery) -> str:
        url = reverse("admin:deliveries_event_change", args=[delivery.event_id])
        return format_html('<a href="{}">{} {}</a>', url, delivery.event.type, delivery.event.webhook_id)

    @admin.display(description="endpoint")
    def endpoint_link(self, delivery: Delivery) -> str:
        endpoint = delivery.endpoint
        url = reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])
        tenant = f" (tenant {endpoint.tenant})" if endpoint.tenant else ""
        return format_html('<a href="{}">#{} {}</a>{}', url, endpoint.pk, endpoint.url, tenant)

    @admin.display(description="attempts")
    def attempts(self, delivery: Delivery) -> int:
        return delivery.attempt_count

    @admin.display(description="last result")
    def last_result(self, delivery: Delivery) -> str:
        if delivery.status == DeliveryStatus.SUCCEEDED:
            return f"HTTP {delivery.last_status_code}" if delivery.last_status_code else "-"
        return Truncator(delivery.last_error).chars(50) or "-"

    @admin.display(description="next attempt")
    def waiting_display(self, delivery: Delivery) -> str:
        return waiting_html(delivery, timezone.now())

    @admin.display(description="next attempt")
    def waiting_detail(self, delivery: Delivery) -> str:
        return waiting_html(delivery, timezone.now(), head=ordering.blocking_head(delivery))

    @admin.display(description="its key")
    def chain_display(self, delivery: Delivery) -> str:
        """Where the delivery stands in its key's chain: how many of the key are pending."""
        figures = chain_figures([(delivery.endpoint_id, delivery.ordering_key)])[
            delivery.endpoint_id, delivery.ordering_key
        ]
        chain = urlencode({"endpoint": delivery.endpoint_id, "key": delivery.ordering_key})
        return format_html(
            '{} pending of this key to this endpoint, {} of them waiting behind the earliest · <a href="{}?{}">'
            "the key's deliveries</a>",
            figures.pending,
            figures.behind,
            reverse("admin:deliveries_delivery_changelist"),
            chain,
        )

    @admin.display(description="attempts, oldest first")
    def attempt_history(self, delivery: Delivery) -> str:
        attempts = [
            {
                "attempt": attempt,
                "request_headers": pretty_json(attempt.request_headers),
                "response_headers": pretty_json(attempt.response_headers),
            }
            for attempt in delivery.attempts.order_by("number")
        ]
        return render_to_string(
            "deliveries/admin/attempt_history.html", {"attempts": attempts, "manual": AttemptTrigger.MANUAL}
        )

    # --- Retry now ------------------------------------------------------------------------

    def has_retry_delivery_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "retry_delivery")

    @admin.action(description="Retry now (as a manual attempt)", permissions=["retry_delivery"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = retry_deliveries(ids_by_keyset(queryset), AttemptTrigger.MANUAL)
        record_in_history(request, Delivery, report.queued, "Retried now (manual attempt).", HISTORY_FIELDS)
        self.message_user(request, report.summary() + ".", messages.SUCCESS if report.queued else messages.WARNING)

    # --- Cancel ---------------------------------------------------------------------------

    def has_cancel_delivery_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "cancel_delivery")

    @admin.action(description="Cancel (pending or failed deliveries: not sent)", permissions=["cancel_delivery"])
    def cancel_pending(self, request: HttpRequest, queryset: QuerySet) -> None:
        report = cancel_deliveries(ids_by_keyset(queryset))
        record_in_history(request, Delivery, report.queued, CANCELLED_MESSAGE, HISTORY_FIELDS)
        self.message_user(request, _cancel_summary(report), messages.SUCCESS if report.queued else messages.WARNING)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Cancel button of one pending delivery's page (POST only)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        delivery = self._button_target(request, object_id, self.has_cancel_delivery_permission)
        report = cancel_deliveries([delivery.pk])
        record_in_history(request, Delivery, report.queued, CANCELLED_MESSAGE, HISTORY_FIELDS)
        if report.queued:
            self.message_user(request, f"Delivery {delivery.pk} cancelled: {CANCEL_NOTE}", messages.SUCCESS)
        else:
            reason = ", ".join(report.skipped) or "nothing to do"
            self.message_user(request, f"Delivery {delivery.pk} was not cancelled: {reason}.", messages.WARNING)
        return redirect(reverse("admin:deliveries_delivery_change", args=[delivery.pk]))

    # --- the buttons of a delivery's page -------------------------------------------------

    def get_urls(self):
        buttons = [
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="deliveries_delivery_retry",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="deliveries_delivery_cancel",
            ),
        ]
        return [*buttons, *super().get_urls()]

    def _button_target(self, request: HttpRequest, object_id: str, allowed) -> Delivery:
        """The delivery a button posted to, once `allowed(request)` said the user may."""
        if not allowed(request):
            raise PermissionDenied
        delivery = self.get_object(request, unquote(object_id))
        if delivery is None:
            raise Http404(f"no delivery {object_id}")
        return delivery

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The Retry now button of one delivery's page (POST only)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        delivery = self._button_target(request, object_id, self.has_retry_delivery_permission)
        report = retry_deliveries([delivery.pk], AttemptTrigger.MANUAL)
        record_in_history(request, Delivery, report.queued, "Retried now (manual attempt).", HISTORY_FIELDS)
        if report.queued:
            self.message_user(
                request,
                f"Delivery {delivery.pk} queued: attempt {delivery.attempt_count + 1} goes out within seconds "
                "as a manual retry. Reload to see it.",
                messages.SUCCESS,
            )
        else:
            reason = ", ".join(report.skipped) or "nothing to do"
            self.message_user(request, f"Delivery {delivery.pk} was not retried: {reason}.", messages.WARNING)
        return redirect(reverse("admin:deliveries_delivery_change", args=[delivery.pk]))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_retry": self.has_retry_delivery_permission(request),
            "can_cancel": self.has_cancel_delivery_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)
