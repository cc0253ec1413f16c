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
from endpoints.models import Endpoint, SignatureScheme, VerificationStatus
from endpoints.signature_formats import DEFAULT_SIGNATURE_HEADER, SCHEME_TRAITS, SIGNATURE_PRESETS, matching_preset

from ..backlog import backlog_by_endpoint
from ..endpoint_stats import (
    RATE_WINDOW,
    EndpointState,
    attempt_rates,
    endpoint_state,
    with_delivery_figures,
    within_time_limit,
)
from . import new_secrets
from .common import PermissionCheckedActionsMixin, ids_of, user_may
from .endpoint_actions import EndpointActions
from .endpoint_backlog import backlog_line, backlog_table
from .filters import EndpointStateFilter, TenantFilter
from .forms import EndpointForm
from .signing_keys import SigningKeysAdminMixin

RATES_TIME_LIMIT_MS = 1500
RATES_UNKNOWN = object()
NO_REPLAY_PROTECTION = (
    "This signature format signs no timestamp: anyone who captures one request can send it again, and it "
    "still verifies (no replay protection). Receivers should deduplicate on the webhook id (X-Webhook-Id, also "
    "the body's id). Prefer Standard Webhooks or Stripe-style when the receiver can verify them."
)

RATE_LIMIT_NOTE = (
    "At most this many requests per period (seconds) to this endpoint, from every worker together; "
    "leave both empty for no limit."
)


class EndpointChangeList(ChangeList):
    """Adds each listed endpoint's success rate and its backlog by what the deliveries wait
    for, from one query each for the whole page.

    That query reads every attempt of the last 24 h; past a few million a day it would hold
    the page for seconds, so it gets RATES_TIME_LIMIT_MS and the column then says "n/a"
    (`manage.py webhook_stats` has no limit).
    """

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list = list(self.result_list)
        ids = ids_of(self.result_list)
        rates = within_time_limit(RATES_TIME_LIMIT_MS, lambda: attempt_rates(ids))
        backlogs = backlog_by_endpoint(ids, timezone.now())
        for endpoint in self.result_list:
            endpoint.attempt_rate = RATES_UNKNOWN if rates is None else rates.get(endpoint.pk)
            endpoint.backlog = backlogs[endpoint.pk]


def _deliveries_url(endpoint: Endpoint, status: str) -> str:
    return reverse("admin:deliveries_delivery_changelist") + f"?endpoint={endpoint.pk}&status__exact={status}"


@admin.register(Endpoint)
class EndpointAdmin(SigningKeysAdminMixin, EndpointActions, PermissionCheckedActionsMixin, admin.ModelAdmin):
    form = EndpointForm
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
    actions = [
        "enable_endpoints",
        "disable_endpoints",
        "verify_endpoints",
        "waive_verifications",
        "send_test_events",
        "rotate_secrets",
        "replay_failed",
    ]
    change_list_template = "deliveries/admin/change_list.html"
    readonly_fields = (
        "state_display",
        "disabled_reason",
        "disabled_at",
        "consecutive_failures",
        "paused_until",
        "failing_since",
        "verification_display",
        "secrets_summary",
        "signature_summary",
        "delivery_figures",
        "backlog_display",
        "created_at",
        "updated_at",
    )

    def get_fieldsets(self, request: HttpRequest, obj=None):
        editable = ["url", "tenant", "description", "event_types", "headers", "sensitive_headers"]
        signature = [
            "signature_preset",
            "signature_scheme",
            "signature_header",
            "signature_encoding",
            "signature_prefix",
        ]
        rate_limit = ("Rate limit", {"fields": [("rate_limit", "rate_limit_period")], "description": RATE_LIMIT_NOTE})
        if obj is None:
            return ((None, {"fields": editable}), ("Signature format", {"fields": signature}), rate_limit)
        return (
            (None, {"fields": editable}),
            ("Signature format", {"fields": ["signature_summary", *signature]}),
            rate_limit,
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
                        "verification_display",
                        "delivery_figures",
                        "backlog_display",
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

    # Django's add, change and delete permissions, read from the table the customers' API reads
    # (deliveries/permissions.py).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "add_endpoint")

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return user_may(request, "change_endpoint")

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # An endpoint with deliveries is disabled, not deleted: the history stays until retention.
        if obj is not None and obj.deliveries.exists():
            return False
        return user_may(request, "delete_endpoint")

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
        if state == EndpointState.UNVERIFIED:
            return format_html(
                '<span style="color:#b35c00">unverified</span><br><span class="quiet">deliveries wait for the '
                "verification handshake</span>"
            )
        return format_html('<span style="color:#2e7d32">{}</span>', "active")

    @admin.display(description="verification")
    def verification_display(self, endpoint: Endpoint) -> str:
        """The handshake's state: when verified, or why not yet and when it runs again."""
        status = endpoint.get_verification_status_display()
        if endpoint.verified_at:
            status += f" · handshake answered at {timezone.localtime(endpoint.verified_at):%Y-%m-%d %H:%M}"
        if endpoint.verification_status != VerificationStatus.UNVERIFIED:
            return status
        due = endpoint.verification_due_at
        return format_html(
            "{} · {} handshake(s) so far{}{}",
            status,
            endpoint.verification_attempts,
            f", next at {timezone.localtime(due):%Y-%m-%d %H:%M:%S}" if due else "",
            format_html('<br><span class="quiet">{}</span>', endpoint.verification_error)
            if endpoint.verification_error
            else "",
        )

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
        link = format_html('<a href="{}">{}</a>', _deliveries_url(endpoint, "pending"), endpoint.pending_count)
        backlog = getattr(endpoint, "backlog", None)  # lists only: the page's figures (EndpointChangeList)
        if not backlog:
            return link
        return format_html('{}<br><span class="quiet">{}</span>', link, backlog_line(backlog))

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

    @admin.display(description="backlog")
    def backlog_display(self, endpoint: Endpoint) -> str:
        return backlog_table(endpoint, backlog_by_endpoint([endpoint.pk], timezone.now())[endpoint.pk])

    @admin.display(description="signing secrets")
    def secrets_summary(self, endpoint: Endpoint) -> str:
        """When each secret was made and until when it signs; never the value. An ed25519 key
        shows its public key (not secret: the receiver verifies with it), never the private one.
        In a format with one signature per request, the oldest live secret signs and the newer
        ones wait; in an HMAC-only format, an ed25519 key left by a switch of scheme signs nothing."""
        now = timezone.now()
        secrets = list(
            endpoint.secrets.order_by("-created_at", "-id").values_list("created_at", "expires_at", "public_key")[:10]
        )
        traits = SCHEME_TRAITS.get(endpoint.signature_scheme)
        one_signature = traits is not None and traits.one_signature
        live = [i for i, (_, expires, _) in enumerate(secrets) if expires is None or expires > now]
        # The indices of the keys this format signs with (an HMAC format: shared secrets only).
        signing = [i for i in live if traits is None or traits.key_pairs_sign or not secrets[i][2]]

        def state(index: int) -> str:
            if index not in live:
                return "expired"
            if index not in signing:
                return "signs nothing in this format (an ed25519 key)"
            if not one_signature or index == signing[-1]:
                return "signs"
            takes_over = secrets[signing[signing.index(index) + 1]][1]  # when the next older one expires
            return f"waits, signs from {timezone.localtime(takes_over):%Y-%m-%d %H:%M}" if takes_over else "waits"

        rows = [
            (
                f"{timezone.localtime(created):%Y-%m-%d %H:%M}",
                state(index),
                f" until {timezone.localtime(expires):%Y-%m-%d %H:%M}" if expires else "",
                format_html(' · public key <code class="webhooks-public-key">{}</code>', public) if public else "",
            )
            for index, (created, expires, public) in enumerate(secrets)
        ]
        listed = format_html_join(mark_safe("<br>"), "created {}: {}{}{}", rows)
        return format_html(
            '{}<div class="help">Shared secrets are shown once, when created; an ed25519 private key never (its '
            "receiver needs only the public key). To hand out a new one, use the action "
            "<em>Rotate signing secret</em> in the list.</div>",
            listed,
        )

    @admin.display(description="receivers get")
    def signature_summary(self, endpoint: Endpoint) -> str:
        """The signature header as sent, the preset it matches, and the replay warning."""
        scheme, header = endpoint.signature_scheme, endpoint.signature_header or DEFAULT_SIGNATURE_HEADER
        traits = SCHEME_TRAITS.get(scheme)
        if traits is None:
            return format_html('<span style="color:#c62828">unknown signature scheme {}</span>', scheme)
        sent = {
            "standard": "webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>",
            "standard_ed25519": "webhook-signature: v1a,<base64 ed25519 signature of id.timestamp.body>",
            "timestamped_hex": f"{header}: t=<timestamp>,v1=<hex HMAC-SHA256 of timestamp.body>",
            "body_hmac": f"{header}: {endpoint.signature_prefix}<{endpoint.signature_encoding or 'hex'} "
            "HMAC-SHA256 of the body>",
        }.get(scheme, scheme)
        preset = matching_preset(
            scheme, endpoint.signature_header, endpoint.signature_encoding, endpoint.signature_prefix
        )
        preset_note = f" ({SIGNATURE_PRESETS[preset].label.split(' (')[0]})" if preset else ""
        if traits.one_signature:
            rotation = "During a rotation the oldest live secret signs alone until it expires, then the next one."
        elif scheme == SignatureScheme.STANDARD_ED25519:
            rotation = (
                "Signed with an ed25519 private key that never leaves the sender; receivers verify with its public "
                "key (whpk_..., listed with the signing secrets). During a rotation every live key signs."
            )
        else:
            rotation = "During a rotation every live secret signs."
        warning = (
            format_html('<p class="errornote" id="no-replay-protection">{}</p>', NO_REPLAY_PROTECTION)
            if not traits.signed_timestamp
            else ""
        )
        return format_html("<code>{}</code>{}<br>{}{}", sent, preset_note, rotation, warning)

    def save_model(self, request: HttpRequest, obj: Endpoint, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        traits = SCHEME_TRAITS.get(obj.signature_scheme)
        if traits is not None and not traits.signed_timestamp:
            self.message_user(request, f"Endpoint {obj.pk}: {NO_REPLAY_PROTECTION}", messages.WARNING)

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
