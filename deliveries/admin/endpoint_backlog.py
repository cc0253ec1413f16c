"""An endpoint's backlog in the console: its pending deliveries by what they wait for
(deliveries.backlog), its rate limit, and links to each group."""

from collections import Counter

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe

from endpoints.models import Endpoint

from ..backlog import Waiting, rate_limit_text
from ..models import OrderingKey

# The order an operator reads them in: moving, waiting for time, waiting for something else.
SHOWN = (
    (Waiting.DUE, "due"),
    (Waiting.SENDING, "being sent"),
    (Waiting.RETRY, "retry"),
    (Waiting.RATE_LIMIT, "rate limit"),
    (Waiting.BREAKER, "breaker"),
    (Waiting.ORDERING, "ordering"),
    (Waiting.UNVERIFIED, "unverified"),
    (Waiting.DISABLED, "disabled"),
    (Waiting.UNRECORDED, "parked"),
)


def waiting_url(endpoint_id: int, state: str) -> str:
    """The deliveries list of one endpoint, narrowed to one `Waiting` state."""
    return (
        reverse("admin:deliveries_delivery_changelist") + "?" + urlencode({"endpoint": endpoint_id, "waiting": state})
    )


def backlog_line(backlog: Counter) -> str:
    """The non-zero groups, for a list's cell: "due 3 · retry 2 · breaker 20"."""
    return " · ".join(f"{short} {backlog[state]}" for state, short in SHOWN if backlog[state])


def backlog_table(endpoint: Endpoint, backlog: Counter) -> str:
    """Every group with its count (a link to its deliveries), the rate limit, the ordering keys."""
    rows = format_html_join(
        "",
        '<tr><td>{}</td><td class="webhooks-count">{}</td></tr>',
        (
            (
                format_html('<a href="{}">{}</a>', waiting_url(endpoint.pk, state), state.label)
                if backlog[state]
                else state.label,
                backlog[state],
            )
            for state, _ in SHOWN
        ),
    )
    rate = rate_limit_text(endpoint) or "none"
    keys = reverse("admin:deliveries_orderingkey_changelist") + "?" + urlencode({"endpoint": endpoint.pk})
    has_keys = OrderingKey.objects.filter(endpoint_id=endpoint.pk).exists()
    return format_html(
        '<table class="webhooks-backlog"><thead><tr><th>pending, waiting for</th><th>deliveries</th></tr></thead>'
        "<tbody>{}</tbody></table>rate limit: {}{}",
        rows,
        rate,
        format_html(' · <a href="{}">ordering keys</a>', keys) if has_keys else mark_safe(""),
    )
