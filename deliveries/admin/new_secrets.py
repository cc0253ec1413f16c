"""New signing secrets, shown once (for an ed25519 key pair, its public key: the private key is
never shown).

The action that creates a secret (rotation, or adding an endpoint) remembers in the session
which secret rows may be shown (ids, never values) and redirects to a page that shows them:
reading the list removes it from the session, so a reload shows nothing. The values come
from the endpoint itself; admin_view marks the page never_cache, so the browser keeps no copy.
"""

import time
from collections.abc import Iterable
from datetime import datetime

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from endpoints.models import Endpoint

SESSION_KEY = "webhooks_secrets_to_reveal"
SHOWN_WITHIN_SECONDS = 600


def _newest_secret_id(endpoint: Endpoint) -> int | None:
    return endpoint.secrets.order_by("-created_at", "-id").values_list("pk", flat=True).first()


def reveal_entry(endpoint: Endpoint, old_until: datetime | None = None) -> dict:
    """What the session keeps for one new secret: its row id, never its value."""
    until = old_until.isoformat() if old_until else None
    return {"endpoint": endpoint.pk, "secret": _newest_secret_id(endpoint), "at": time.time(), "old_until": until}


def remember(request: HttpRequest, entries: Iterable[dict]) -> None:
    request.session[SESSION_KEY] = list(entries)


def new_secrets_page(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """The secrets this session just created, once; nothing if they were rotated again since,
    or if the page is opened more than SHOWN_WITHIN_SECONDS later."""
    shown = []
    for entry in request.session.pop(SESSION_KEY, []):
        endpoint = Endpoint.objects.filter(pk=entry["endpoint"]).first()
        if endpoint is None or time.time() - entry["at"] > SHOWN_WITHIN_SECONDS:
            continue
        if _newest_secret_id(endpoint) == entry["secret"]:
            old_until = datetime.fromisoformat(entry["old_until"]) if entry.get("old_until") else None
            # An ed25519 key pair: its public key is what the receiver needs; the private key is never shown.
            public_key = endpoint.public_key
            secret = None if public_key else endpoint.secret
            shown.append({"endpoint": endpoint, "secret": secret, "public_key": public_key, "old_until": old_until})
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "New signing secrets" if shown else "No new secret to show",
        "opts": model_admin.model._meta,
        "shown": shown,
    }
    return TemplateResponse(request, "deliveries/admin/new_secrets.html", context)
