"""Pieces every operator screen uses: permission-checked actions, read-only history, cheap counts."""

import json
import uuid
from collections.abc import Iterable

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.forms import Form
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.functional import cached_property
from django.utils.html import format_html

from .. import permissions

# List pages count at most this many rows (and then say "10,000+"): an exact COUNT(*) of a
# table of millions of deliveries takes seconds and tells an operator nothing more.
COUNT_CAP = 10_000


class AtLeast(int):
    """A count known only to exceed COUNT_CAP: compares as COUNT_CAP + 1, prints as "10,000+"."""

    def __str__(self) -> str:
        return f"{COUNT_CAP:,}+"


class CappedCountPaginator(Paginator):
    """Counts with `SELECT count(*) FROM (SELECT id ... LIMIT 10001)`: the cost stops at the cap."""

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by().values("pk")[: COUNT_CAP + 1].count()
        return AtLeast(counted) if counted > COUNT_CAP else counted


class LargeTableAdmin(admin.ModelAdmin):
    """For tables of millions of rows: capped counts, no "N total" count, no facet counts."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100


class ReadOnlyHistoryAdmin(LargeTableAdmin):
    """History is not edited: events, deliveries and attempts are shown, never changed or
    deleted here (retention deletes old rows)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class PermissionCheckedActionsMixin:
    """Actions are offered only to users with their permission (Django filters them by
    `@admin.action(permissions=...)`); a POST naming an action the user may not run is
    answered 403, not the "No action selected" redirect Django gives by default."""

    def changelist_view(self, request: HttpRequest, extra_context=None):
        if request.method == "POST" and "action" in request.POST:
            allowed = self.get_actions(request)
            if any(name not in allowed for name in request.POST.getlist("action") if name):
                raise PermissionDenied
        return super().changelist_view(request, extra_context)


def record_in_history(
    request: HttpRequest, model, ids: Iterable[int], message: str, fields: tuple[str, ...] | None = None
) -> None:
    """Write what an operator did to each object's admin History ("who retried this?"), 1,000
    objects per INSERT; `fields`: only those its str() needs."""
    ids = list(ids)
    for start in range(0, len(ids), 1000):
        objects = model._default_manager.filter(pk__in=ids[start : start + 1000])
        if fields:
            objects = objects.only(*fields)
        LogEntry.objects.log_actions(request.user.pk, objects, CHANGE, change_message=message)


def user_may(request: HttpRequest, operation: str) -> bool:
    """Whether the request's user holds the permission of `operation` (deliveries/permissions.py,
    the table the customers' API reads too)."""
    return permissions.user_may(request.user, operation)


def action_form_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    form: Form,
    title: str,
    intro: str,
    submit: str,
) -> TemplateResponse:
    """The intermediate page of an action that needs input (a time, a reason): the form, the
    objects it applies to, and the hidden fields that post it back to the same action."""
    opts = model_admin.model._meta
    shown = list(queryset[:50])
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "intro": intro,
        "submit": submit,
        "form": form,
        "objects": shown,
        "more": queryset.count() - len(shown) if len(shown) == 50 else 0,
        "opts": opts,
        "action": action,
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, "deliveries/admin/action_form.html", context)


def pretty_json(value) -> str:
    """JSON as an operator reads it: indented, keys in their order, non-ASCII as is."""
    return format_html('<pre class="webhooks-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False))


def parse_event_id(text: str) -> uuid.UUID | None:
    """An event id as typed: the UUID, its hex, or the webhook id `evt_<hex>`; else None."""
    text = text.strip()
    if text.startswith("evt_"):
        text = text[4:]
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


def ids_of(objects: Iterable) -> list[int]:
    return [obj.pk for obj in objects]
