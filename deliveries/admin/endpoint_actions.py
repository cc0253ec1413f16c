"""What an operator can do to endpoints: enable, disable, verify or waive verification, send a
test event, rotate the signing secret, replay failures. Each action needs its permission (see EndpointAdmin) and
says what it did, or why it did not."""

from datetime import timedelta

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from endpoints.models import Endpoint
from endpoints.signature_formats import SCHEME_TRAITS

from ..endpoint_stats import EndpointState, endpoint_state
from ..operations import OperationRefused, replay_failed_since, send_test_event
from ..verification import verify_endpoint, waive_verification
from . import new_secrets
from .common import action_form_page, ids_of, plural, record_in_history, user_may
from .forms import DisableForm, ReplaySinceForm, RotateSecretForm

MAX_ROTATIONS_AT_ONCE = 50
MAX_HANDSHAKES_AT_ONCE = 10


class EndpointActions:
    """The actions of EndpointAdmin, with the permission each needs."""

    # --- permissions of the actions -----------------------------------------------------

    def has_enable_disable_endpoint_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "enable_disable_endpoint")

    def has_send_test_event_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "send_test_event")

    def has_rotate_secret_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "rotate_secret")

    def has_replay_delivery_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "replay_delivery")

    def has_verify_endpoint_permission(self, request: HttpRequest) -> bool:
        return user_may(request, "verify_endpoint")

    # --- actions --------------------------------------------------------------------------

    @admin.action(description="Enable (and close the circuit breaker)", permissions=["enable_disable_endpoint"])
    def enable_endpoints(self, request: HttpRequest, queryset: QuerySet) -> None:
        enabled, already = 0, 0
        for endpoint in queryset:
            if endpoint_state(endpoint) in (EndpointState.ACTIVE, EndpointState.UNVERIFIED):
                already += 1
                continue
            with transaction.atomic():
                endpoint.enable()
            record_in_history(request, Endpoint, [endpoint.pk], "Enabled.")
            enabled += 1
        text = f"{plural(enabled, 'endpoint')} enabled; their kept deliveries go out with the next sweep"
        if already:
            text += f"; {plural(already, 'endpoint was', 'endpoints were')} already active"
        self.message_user(request, text + ".", messages.SUCCESS if enabled else messages.WARNING)

    @admin.action(description="Verify now (run the handshake)", permissions=["verify_endpoint"])
    def verify_endpoints(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.count()
        if count > MAX_HANDSHAKES_AT_ONCE:
            self.message_user(
                request,
                f"Not verified: {count} endpoints selected; verify at most {MAX_HANDSHAKES_AT_ONCE} at a time "
                "(each handshake is an HTTP request made while this page waits).",
                messages.ERROR,
            )
            return
        granted, refused = [], []
        for endpoint in queryset:
            result = verify_endpoint(endpoint.pk, force=True)
            if result is None:
                continue
            if result.granted:
                granted.append(str(endpoint.pk))
                record_in_history(request, Endpoint, [endpoint.pk], "Verified: the handshake was answered.")
            else:
                refused.append(f"endpoint {endpoint.pk}: {result.reason}")
                record_in_history(request, Endpoint, [endpoint.pk], f"Handshake not answered: {result.reason}.")
        if granted:
            self.message_user(
                request,
                f"Verified endpoint {', '.join(granted)}; their waiting deliveries are being sent.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(request, "Not verified: " + "; ".join(refused) + ".", messages.WARNING)

    @admin.action(description="Waive verification (send without the handshake)", permissions=["verify_endpoint"])
    def waive_verifications(self, request: HttpRequest, queryset: QuerySet) -> None:
        waived, other = 0, 0
        for endpoint in queryset:
            with transaction.atomic():
                done = waive_verification(endpoint)
                if done:
                    record_in_history(request, Endpoint, [endpoint.pk], "Verification waived.")
            waived, other = waived + done, other + (not done)
        text = f"Verification waived for {plural(waived, 'endpoint')}; their waiting deliveries are being sent"
        if other:
            text += f"; {plural(other, 'endpoint was', 'endpoints were')} not awaiting verification"
        self.message_user(request, text + ".", messages.SUCCESS if waived else messages.WARNING)

    @admin.action(description="Disable…", permissions=["enable_disable_endpoint"])
    def disable_endpoints(self, request: HttpRequest, queryset: QuerySet):
        form = DisableForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return action_form_page(
                self,
                request,
                queryset,
                action="disable_endpoints",
                form=form,
                title="Disable endpoints",
                intro="Nothing is sent to a disabled endpoint; its pending deliveries are kept and resume when "
                "it is enabled again.",
                submit="Disable",
            )
        reason = f"{form.cleaned_data['reason']} (by {request.user.get_username()})"
        disabled, already = 0, 0
        for endpoint in queryset:
            if not endpoint.is_active:
                already += 1
                continue
            with transaction.atomic():
                endpoint.disable(reason)
            record_in_history(request, Endpoint, [endpoint.pk], f"Disabled: {reason}.")
            disabled += 1
        text = f"{plural(disabled, 'endpoint')} disabled: {reason}"
        if already:
            text += f"; {plural(already, 'endpoint was', 'endpoints were')} already disabled"
        self.message_user(request, text + ".", messages.SUCCESS if disabled else messages.WARNING)
        return None

    @admin.action(description="Send a test event (webhook.test)", permissions=["send_test_event"])
    def send_test_events(self, request: HttpRequest, queryset: QuerySet) -> None:
        sent, refused, paused = [], [], []
        for endpoint in queryset:
            try:
                delivery = send_test_event(endpoint)
            except OperationRefused as refusal:
                refused.append(str(refusal))
                continue
            sent.append(delivery)
            record_in_history(request, Endpoint, [endpoint.pk], f"Sent a test event (delivery {delivery.pk}).")
            if endpoint_state(endpoint) == EndpointState.PAUSED:
                paused.append(str(endpoint.pk))
        if sent:
            links = format_html_join(
                ", ",
                '<a href="{}">{}</a>',
                ((reverse("admin:deliveries_delivery_change", args=[d.pk]), d.pk) for d in sent),
            )
            note = ""
            if paused:
                note = f" Endpoint {', '.join(paused)} is paused by its circuit breaker: the test waits for it."
            self.message_user(
                request,
                format_html("Test event queued for {}: deliveries {}.{}", plural(len(sent), "endpoint"), links, note),
                messages.SUCCESS,
            )
        if refused:
            self.message_user(request, "Not sent: " + "; ".join(refused) + ".", messages.WARNING)

    @admin.action(description="Rotate signing secret…", permissions=["rotate_secret"])
    def rotate_secrets(self, request: HttpRequest, queryset: QuerySet):
        count = queryset.count()
        if count > MAX_ROTATIONS_AT_ONCE:
            self.message_user(
                request,
                f"Not rotated: {count} endpoints selected; rotate at most {MAX_ROTATIONS_AT_ONCE} at a time, "
                "since each new secret has to be handed to its receiver.",
                messages.ERROR,
            )
            return None
        form = RotateSecretForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return action_form_page(
                self,
                request,
                queryset,
                action="rotate_secrets",
                form=form,
                title="Rotate signing secrets",
                intro="Each endpoint gets a new secret, shown once on the next page. Until the grace period "
                "ends, webhooks carry a signature with the old secret too. In a format with one signature per "
                "request (body_hmac: GitHub-, Shopify-style), the old secret signs alone until then and the new one "
                "after: switch the receiver at that time, or have it accept both meanwhile.",
                submit="Rotate",
            )
        grace = timedelta(hours=form.cleaned_data["grace_hours"])
        reveal = []
        for endpoint in queryset:
            endpoint.rotate_secret(grace=grace)
            hours = form.cleaned_data["grace_hours"]
            traits = SCHEME_TRAITS.get(endpoint.signature_scheme)
            if traits is not None and traits.one_signature:
                note = f"the old one signs alone {hours} h more, then the new one (one signature per request)"
            else:
                note = f"the old one signs {hours} h more"
            record_in_history(request, Endpoint, [endpoint.pk], f"Rotated the signing secret; {note}.")
            reveal.append(new_secrets.reveal_entry(endpoint, old_until=timezone.now() + grace))
        new_secrets.remember(request, reveal)
        return HttpResponseRedirect(reverse("admin:endpoints_endpoint_new_secrets"))

    @admin.action(description="Replay failed deliveries since…", permissions=["replay_delivery"])
    def replay_failed(self, request: HttpRequest, queryset: QuerySet):
        form = ReplaySinceForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return action_form_page(
                self,
                request,
                queryset,
                action="replay_failed",
                form=form,
                title="Replay failed deliveries",
                intro="Every delivery of these endpoints that failed since the time below is sent again, "
                "as a replay attempt with the same webhook id.",
                submit="Replay",
            )
        since = form.cleaned_data["since"]
        report = replay_failed_since(ids_of(queryset), since)
        when = f"{timezone.localtime(since):%Y-%m-%d %H:%M}"
        record_in_history(request, Endpoint, ids_of(queryset), f"Replay of failures since {when}: {report.summary()}.")
        self.message_user(
            request,
            f"Replay of failures since {when}: {report.summary()}.",
            messages.SUCCESS if report.queued else messages.WARNING,
        )
        return None
