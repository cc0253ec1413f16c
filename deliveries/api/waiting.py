"""Why a pending delivery waits, as the API shows it: the `waiting` object of a delivery.

Derived as admin derives it (deliveries.backlog.waiting_of, the same states and names), from the
row's own scheduling fields and its endpoint's breaker; a page's ordering heads (the delivery
each one waiting behind its ordering key waits for) come from one query for the whole page
(backlog.heads_of_waiting), none when no row of the page waits for ordering.
"""

from collections.abc import Iterable
from datetime import datetime

from rest_framework import serializers

from ..backlog import Waiting, heads_of_waiting, waiting_of
from ..models import Delivery

__all__ = ["WaitingSerializer", "waiting_context", "waiting_data"]

REASONS_TEXT = (
    "due: its next attempt is due, a worker picks it up within seconds; sending: a worker is sending it "
    "right now; retry: the retry schedule, until the next attempt; rate_limit: its endpoint's rate limit, "
    "until a slot frees; breaker: its endpoint's circuit breaker is open (until: when it tries again); "
    "ordering: behind an earlier delivery of its ordering key (blocked_by); disabled: its endpoint is "
    "disabled; unverified: its endpoint has not answered the verification handshake yet; unrecorded: it "
    "waits for its endpoint (parked before reasons were recorded)."
)


class WaitingSerializer(serializers.Serializer):
    """What a pending delivery waits for (null once it is succeeded, failed or cancelled)."""

    reason = serializers.ChoiceField(choices=Waiting.choices, help_text=REASONS_TEXT)
    until = serializers.DateTimeField(
        allow_null=True,
        help_text="When the wait ends, where a time is known (retry, rate_limit, breaker); else null.",
    )
    blocked_by = serializers.IntegerField(
        allow_null=True,
        help_text="ordering: the id of the delivery of the same ordering key it waits for (null if none is "
        "open any more: it goes out shortly); null for every other reason.",
    )


def waiting_context(deliveries: Iterable[Delivery], now: datetime) -> dict:
    """The serializer context `waiting_data` reads: the time the states are judged at, and the
    blocking head's id of each chain a delivery of `deliveries` waits behind (one query, or none).

    The deliveries need their scheduling fields (status, locked_until, next_attempt_at,
    parked_reason), endpoint_id and ordering_key."""
    heads = heads_of_waiting(deliveries, now)
    return {"now": now, "blocking_heads": {chain: head.pk for chain, head in heads.items()}}


def waiting_data(delivery: Delivery, context: dict) -> dict | None:
    """The `waiting` object of `delivery` (None unless it is pending), from `waiting_context`."""
    now = context["now"]
    state = waiting_of(delivery, now)
    if state is None:
        return None
    until, blocked_by = None, None
    if state in (Waiting.RETRY, Waiting.RATE_LIMIT):
        until = delivery.next_attempt_at
    elif state == Waiting.BREAKER:
        paused_until = delivery.endpoint.paused_until
        until = paused_until if paused_until is not None and paused_until > now else None
    elif state == Waiting.ORDERING:
        blocked_by = context["blocking_heads"].get((delivery.endpoint_id, delivery.ordering_key))
    return {"reason": state.value, "until": until, "blocked_by": blocked_by}
