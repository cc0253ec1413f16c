"""Endpoints: their state and figures, and the operator actions on them.

Registered here rather than in endpoints/admin.py because the figures and actions need the
deliveries app, and endpoints never imports deliveries (DESIGN.md).
"""

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince

from endpoints.app_settings import webhook_settings
from endpoints.models import Endpoint

from ..endpoint_stats import (
    RATE_WINDOW,
    EndpointState,
    attempt_rates,
    endpoint_state,
    with_delivery_figures,
    within_time_limit,
)
from . import new_secrets
from .common import PermissionCheckedActionsMixin, ids_of
from .endpoint_actions import EndpointActions
from .filters import EndpointStateFilter, TenantFilter
from .signing_keys import SigningKeysAdminMixin

RATES_TIME_LIMIT_MS = 1500
RATES_UNKNOWN = object()


class EndpointChangeList(ChangeList):
    """Adds each listed endpoint's success rate, from one query for the whole page.

    That query reads every attempt of the last 24 h; past a few million a day it would hold
    the page for seconds, so it gets RATES_TIME_LIMIT_MS and the column then says "n/a"
    (`manage.py webhook_stats` has no limit).
    """

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)
        ids = ids_of(self.result_list)
        rates = within_time_limit(RATES_TIME_LIMIT_MS, lambda: attempt_rates(ids))
        for endpoint in self.result_list:
            endpoint.attempt_rate = RATES_UNKNOWN if rates is None else rates.get(endpoint.pk)


def _deliveries_url(endpoint: Endpoint, status: str) -> str:
    return reverse("admin:deliveries_delivery_changelist") + f"?endpoint={endpoint.pk}&status__exact={status}"


@admin.register(Endpoint)
class EndpointAdmin(SigningKeysAdminMixin, EndpointActions, PermissionCheckedActionsMixin, admin.ModelAdmin):
    list_display = (
        "url_display",
        "tenant",
        "state_display",
        "success_rate",
        "last_success",
        "pending",
        "failed",
    )
    list_filter = (EndpointStateFilter, TenantFilter, "signature_scheme")
    search_fields = ("=id", "url", "tenant", "description")
    search_help_text = "Part of the URL, tenant or description; or an endpoint id."
    ordering = ("-id",)
    list_per_page = 100
    actions = ["enable_endpoints", "disable_endpoints", "send_test_events", "rotate_secrets", "replay_failed"]
    change_list_template = "deliveries/admin/change_list.html"
    readonly_fields = (
        "state_display",
        "disabled_reason",
        "disabled_at",
        "consecutive_failures",
        "paused_until",
        "failing_since",
        "secrets_summary",
        "delivery_figures",
        "created_at",
        "updated_at",
    )

    def get_fieldsets(self, request: HttpRequest, obj=None):
        editable = ["url", "tenant", "description", "event_types", "signature_scheme", "headers", "sensitive_headers"]
        if obj is None:
            return ((None, {"fields": editable}),)
        return (
            (None, {"fields": editable}),
            (
                "State",
                {
                    "fields": (
                        "state_display",
                        "disabled_reason",
                        "disabled_at",
                        "consecutive_failures",
                        "paused_until",
                        "failing_since",
                        "delivery_figures",
                    )
                },
            ),
            ("Signing secrets", {"fields": ("secrets_summary",)}),
            ("Record", {"fields": ("created_at", "updated_at")}),
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return with_delivery_figures(super().get_queryset(request))

    def get_changelist(self, request: HttpRequest, **kwargs):
        return EndpointChangeList

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        # Deleting endpoints in bulk would delete their delivery history with them.
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # An endpoint with deliveries is disabled, not deleted: the history stays until retention.
        if obj is not None and obj.deliveries.exists():
            return False
        return super().has_delete_permission(request, obj)

    # --- columns and fields -------------------------------------------------------------

    @admin.display(description="url", ordering="url")
    def url_display(self, endpoint: Endpoint) -> str:
        return Truncator(endpoint.url).chars(60)

    @admin.display(description="status")
    def state_display(self, endpoint: Endpoint) -> str:
        state = endpoint_state(endpoint)
        if state == EndpointState.DISABLED:
            since = f"{timezone.localtime(endpoint.disabled_at):%Y-%m-%d %H:%M}" if endpoint.disabled_at else "?"
            reason = endpoint.disabled_reason or "no reason given"
            return format_html(
                '<span style="color:#c62828">disabled</span> since {}<br><span class="quiet" title="{}">{}</span>',
                since,
                reason,
                Truncator(reason).chars(60),
            )
        if state == EndpointState.PAUSED:
            return format_html(
                '<span style="color:#b35c00">paused</span> until {}<br><span class="quiet">circuit breaker: {} '
                "failures in a row</span>",
                f"{timezone.localtime(endpoint.paused_until):%H:%M:%S}",
                endpoint.consecutive_failures,
            )
        return format_html('<span style="color:#2e7d32">{}</span>', "active")

    @admin.display(description=f"success {RATE_WINDOW.total_seconds() / 3600:g} h")
    def success_rate(self, endpoint: Endpoint) -> str:
        rate = getattr(endpoint, "attempt_rate", None)
        if rate is RATES_UNKNOWN:
            return format_html(
                '<span title="{}">n/a</span>', "Too many attempts to count in time; see manage.py webhook_stats"
            )
        if rate is None or not rate.attempts:
            return "-"
        color = "#c62828" if rate.rate < webhook_settings.HEALTH_THRESHOLD else "inherit"
        return format_html(
            '<span style="color:{}">{} %</span> <span class="quiet">of {}</span>',
            color,
            f"{100 * rate.rate:.1f}",
            rate.attempts,
        )

    @admin.display(description="last success", ordering="last_success_at")
    def last_success(self, endpoint: Endpoint) -> str:
        if endpoint.last_success_at is None:
            return "-"
        return format_html(
            '<span title="{}">{} ago</span>',
            f"{timezone.localtime(endpoint.last_success_at):%Y-%m-%d %H:%M:%S %Z}",
            timesince(endpoint.last_success_at, depth=1),
        )

    @admin.display(description="pending", ordering="pending_count")
    def pending(self, endpoint: Endpoint) -> str:
        if not endpoint.pending_count:
            return "0"
        return format_html('<a href="{}">{}</a>', _deliveries_url(endpoint, "pending"), endpoint.pending_count)

    @admin.display(description="failed", ordering="failed_count")
    def failed(self, endpoint: Endpoint) -> str:
        if not endpoint.failed_count:
            return "0"
        return format_html(
            '<a href="{}" style="color:#c62828">{}</a>', _deliveries_url(endpoint, "failed"), endpoint.failed_count
        )

    @admin.display(description="deliveries")
    def delivery_figures(self, endpoint: Endpoint) -> str:
        return format_html(
            '{} pending, {} failed · <a href="{}">all deliveries</a>',
            self.pending(endpoint),
            self.failed(endpoint),
            reverse("admin:deliveries_delivery_changelist") + f"?endpoint={endpoint.pk}",
        )

    @admin.display(description="signing secrets")
    def secrets_summary(self, endpoint: Endpoint) -> str:
        """When each secret was made and until when it signs; never the value. An ed25519 key
        shows its public key (not secret: the receiver verifies with it), never the private one."""
        now = timezone.now()
        rows = [
            (
                f"{timezone.localtime(created):%Y-%m-%d %H:%M}",
                "signs" if expires is None or expires > now else "expired",
                f" until {timezone.localtime(expires):%Y-%m-%d %H:%M}" if expires else "",
                format_html(' · public key <code class="webhooks-public-key">{}</code>', public) if public else "",
            )
            for created, expires, public in endpoint.secrets.order_by("-created_at", "-id").values_list(
                "created_at", "expires_at", "public_key"
            )[:10]
        ]
        listed = format_html_join(mark_safe("<br>"), "created {}: {}{}{}", rows)
        return format_html(
            '{}<div class="help">Shared secrets are shown once, when created; an ed25519 private key never (its '
            "receiver needs only the public key). To hand out a new one, use the action "
            "<em>Rotate signing secret</em> in the list.</div>",
            listed,
        )

    # --- new secrets, shown once (see new_secrets.py) -------------------------------------

    def get_urls(self):
        reveal = path(
            "new-secrets/",
            self.admin_site.admin_view(self.new_secrets_view),
            name="endpoints_endpoint_new_secrets",
        )
        return [reveal, *super().get_urls()]

    def new_secrets_view(self, request: HttpRequest) -> HttpResponse:
        if not (self.has_rotate_secret_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        return new_secrets.new_secrets_page(self, request)

    def response_add(self, request: HttpRequest, obj: Endpoint, post_url_continue=None):
        """After creating an endpoint, show its generated secret once."""
        if IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, post_url_continue)
        self.message_user(request, f"Endpoint {obj.pk} created: {obj.url}", messages.SUCCESS)
        new_secrets.remember(request, [new_secrets.reveal_entry(obj)])
        return HttpResponseRedirect(reverse("admin:endpoints_endpoint_new_secrets"))
