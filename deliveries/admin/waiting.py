"""How the console says why a pending delivery waits: "waiting: Rate limit, until 12:03:04",
"waiting: Earlier delivery of its ordering key: #812", in lists and on a delivery's page.

Lists attach the blocking heads of a whole page with one query (`attach_blocking_heads`); a
single delivery's page asks `ordering.blocking_head`.
"""

from collections.abc import Iterable
from datetime import datetime

from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import Truncator

from ..backlog import Waiting, heads_of_waiting, waiting_of
from ..models import Delivery

NOT_LOOKED_UP = object()


def moment(value: datetime) -> str:
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S}"


def attach_blocking_heads(deliveries: Iterable[Delivery], now: datetime) -> None:
    """Set `blocking_head` on each delivery waiting behind its ordering key (None if no earlier
    delivery is pending), from one query for all of them."""
    deliveries = list(deliveries)
    heads = heads_of_waiting(deliveries, now)
    for delivery in deliveries:
        if waiting_of(delivery, now) == Waiting.ORDERING:
            delivery.blocking_head = heads.get((delivery.endpoint_id, delivery.ordering_key))


def head_link(head: Delivery, now: datetime) -> str:
    """The delivery that holds up its key: a link, its sequence, what it waits for, its last error."""
    state = waiting_of(head, now)
    parts = [f"sequence {head.sequence}", Waiting(state).label.lower() if state else head.status]
    if head.attempt_count:
        parts.append(f"attempt {head.attempt_count}")
    if head.last_error:
        parts.append(Truncator(head.last_error).chars(40))
    return format_html(
        '<a href="{}" class="webhooks-blocking-head">#{}</a> <span class="quiet">({})</span>',
        reverse("admin:deliveries_delivery_change", args=[head.pk]),
        head.pk,
        ", ".join(parts),
    )


def waiting_html(delivery: Delivery, now: datetime, head=NOT_LOOKED_UP) -> str:
    """What a delivery waits for, in one line: "-" once finished. `head`: the delivery an
    ordering wait is behind (None: none pending); by default the attribute lists attach."""
    state = waiting_of(delivery, now)
    if state is None:
        return "-"
    if state == Waiting.DUE:
        return "due now"
    if state == Waiting.SENDING:
        return f"being sent (lease until {moment(delivery.locked_until)})"
    label = Waiting(state).label
    if state in (Waiting.RETRY, Waiting.RATE_LIMIT):
        return format_html("waiting: {}, until {}", label, moment(delivery.next_attempt_at))
    if state == Waiting.BREAKER:
        paused_until = delivery.endpoint.paused_until
        until = f", until {moment(paused_until)}" if paused_until and paused_until > now else ""
        return format_html("waiting: {}{}", label, until)
    if state == Waiting.ORDERING:
        if head is NOT_LOOKED_UP:
            head = getattr(delivery, "blocking_head", None)
        if head is None:
            return format_html("waiting: {} (none is pending)", label)
        return format_html("waiting: {}: {}", label, head_link(head, now))
    return format_html("waiting: {}", label)
