"""Per-key ordering: the deliveries of one ordering key to one endpoint go out one at a time.

`publish(..., ordering_key="order-7")` puts the event in the chain of that key at each endpoint
it reaches. A chain (`OrderingKey`, one row per endpoint and key) numbers its deliveries 1, 2,
3... in the order the events were published (their `created_at`, then id). Its rule: a delivery
is not sent while an earlier delivery of its chain is *open*: pending, or failed (retries spent
or a final answer: an operator decides, by retrying it or cancelling it). So at fan-out a
delivery whose chain has an open delivery is parked (`ParkedReason.ORDERING`); when a delivery
of the chain succeeds or is cancelled, the chain's lowest open delivery, if it is parked for
ordering, becomes due. Retries keep the order: a delivery waiting to be retried is pending, so
the rest of its key waits behind it. Other keys, and other endpoints, are never held up.

Both sides take the chain's row lock (SELECT ... FOR UPDATE) in the transaction that writes
them, so a fan-out and a completion of the same chain cannot miss each other: whichever
commits second sees what the first wrote. Locks are taken in primary-key order.

An operator's manual retry of an older delivery (cancelled, the key having moved on) sends it at
once: it does not wait for the chain, and the deliveries of the key that are still parked wait
for it as they would for the head. Its `Webhook-Sequence` header tells the receiver it is old.
"""

from collections.abc import Iterable
from functools import partial

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .models import Delivery, DeliveryStatus, OrderingKey, ParkedReason
from .scheduling import unpark

__all__ = [
    "advance",
    "blocking_head",
    "blocking_heads",
    "chains_match",
    "finished_chains",
    "lock_chains",
    "place",
    "release_stalled",
]

Chain = tuple[int, str]  # (endpoint id, ordering key)

# The deliveries that hold up the rest of their chain (the partial index delivery_ordering_open).
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# The states that let the chain move on.
PASSED = (DeliveryStatus.SUCCEEDED, DeliveryStatus.CANCELLED)


def chains_match(chains: Iterable[Chain], key_field: str = "ordering_key") -> Q:
    """The rows of these chains: deliveries (their `ordering_key`) or chain rows (`key`)."""
    match = Q()
    for endpoint_id, key in chains:
        match |= Q(endpoint_id=endpoint_id, **{key_field: key})
    return match


def _lock(chains: Iterable[Chain], create: bool) -> dict[Chain, OrderingKey]:
    """Lock the rows of these chains, in primary-key order (created first, if asked: a row that
    retention deleted between the INSERT and the lock is created again)."""
    chains = set(chains)
    rows: dict[Chain, OrderingKey] = {}
    for _ in range(3 if create else 1):
        if create:
            OrderingKey.objects.bulk_create(
                [OrderingKey(endpoint_id=endpoint_id, key=key) for endpoint_id, key in chains], ignore_conflicts=True
            )
        locked = OrderingKey.objects.select_for_update().filter(chains_match(chains, "key")).order_by("pk")
        rows = {(row.endpoint_id, row.key): row for row in locked}
        if len(rows) == len(chains):
            break
    return rows


def lock_chains(deliveries) -> None:
    """Lock the chains of these deliveries (a queryset), before locking the deliveries
    themselves: the order in which completions take them."""
    chains = set(deliveries.values_list("endpoint_id", "ordering_key").distinct())
    if chains:
        _lock(chains, create=False)


def _busy(chains: set[Chain]) -> set[Chain]:
    """The chains that have an open delivery."""
    rows = (
        Delivery.objects.filter(chains_match(chains), status__in=OPEN)
        .values_list("endpoint_id", "ordering_key")
        .distinct()
    )
    return set(rows)


def place(deliveries: list[Delivery], key_of: dict) -> None:
    """At fan-out, before the deliveries are inserted, in its transaction: give each delivery of
    an ordered event its key and sequence, and park it if its chain is busy.

    `deliveries` must be in publish order of their events; `key_of` maps an event id to its
    ordering key. Deliveries of events without a key are left as they are.
    """
    ordered = [delivery for delivery in deliveries if key_of.get(delivery.event_id)]
    if not ordered:
        return
    chains = {(delivery.endpoint_id, key_of[delivery.event_id]) for delivery in ordered}
    rows = _lock(chains, create=True)
    busy = _busy(chains)
    for delivery in ordered:
        chain = (delivery.endpoint_id, key_of[delivery.event_id])
        row = rows[chain]
        row.last_sequence += 1
        delivery.ordering_key, delivery.sequence = chain[1], row.last_sequence
        if chain in busy:
            # An earlier delivery of the key is open: this one waits for it, whatever its
            # endpoint's state (the head alone waits for the endpoint).
            delivery.next_attempt_at = delivery.queued_until = None
            delivery.parked_reason = ParkedReason.ORDERING
        busy.add(chain)
    now = timezone.now()
    for row in rows.values():
        row.updated_at = now
    OrderingKey.objects.bulk_update(rows.values(), ["last_sequence", "updated_at"])


def advance(chains: Iterable[Chain]) -> list[int]:
    """After deliveries of these chains succeeded or were cancelled, in the transaction that
    recorded it: make each chain's lowest open delivery due if it is parked for ordering (if it
    is on its way, or failed, the chain waits for it). Returns the ids made due; they are
    enqueued after commit."""
    chains = set(chains)
    if not chains:
        return []
    _lock(chains, create=False)
    due: list[tuple[int, int]] = []  # (delivery id, endpoint id)
    now = timezone.now()
    for endpoint_id, key in sorted(chains):
        lowest = (
            Delivery.objects.filter(endpoint_id=endpoint_id, ordering_key=key, status__in=OPEN)
            .order_by("sequence")
            .values_list("pk", "status", "parked_reason")
            .first()
        )
        if lowest is None:
            continue
        pk, status, reason = lowest
        if status == DeliveryStatus.PENDING and reason == ParkedReason.ORDERING:
            if unpark(Delivery.objects.filter(pk=pk), now, reasons=[ParkedReason.ORDERING]):
                due.append((pk, endpoint_id))
    if due:
        transaction.on_commit(partial(_enqueue, due))
    return [pk for pk, _ in due]


def _enqueue(due: list[tuple[int, int]]) -> None:
    """The released deliveries of one endpoint in send batches, one message each."""
    from .sweeper import Due
    from .tasks import enqueue_due  # tasks imports the send path, which imports this module

    enqueue_due(Due(pk, endpoint_id, False) for pk, endpoint_id in due)


def finished_chains(deliveries: Iterable[tuple[Delivery, str]]) -> set[Chain]:
    """The chains of those (delivery, new status) pairs that let their chain move on."""
    return {
        (delivery.endpoint_id, delivery.ordering_key)
        for delivery, status in deliveries
        if delivery.ordering_key is not None and status in PASSED
    }


def release_stalled(limit: int = 100) -> list[int]:
    """For the health job: advance chains whose lowest open delivery is parked for ordering,
    waiting for nothing (the delivery ahead of it was deleted with its event, or purged by
    retention after it failed; or a write went astray), at most `limit` chains a run. Returns
    the ids made due. advance() re-checks each chain under its lock."""
    ahead = Delivery.objects.filter(
        endpoint_id=OuterRef("endpoint_id"),
        ordering_key=OuterRef("ordering_key"),
        status__in=OPEN,
        sequence__lt=OuterRef("sequence"),
    )
    stalled = (
        Delivery.objects.filter(
            status=DeliveryStatus.PENDING, ordering_key__isnull=False, parked_reason=ParkedReason.ORDERING
        )
        .exclude(Exists(ahead))
        .values_list("endpoint_id", "ordering_key")
        .distinct()[:limit]
    )
    chains = list(stalled)
    if not chains:
        return []
    with transaction.atomic():
        return advance(chains)


def blocking_heads(chains: Iterable[Chain]) -> dict[Chain, Delivery]:
    """For each chain, the delivery the rest of it waits for: its lowest open delivery not itself
    parked for ordering (pending, on its way or waiting to be retried; or failed, waiting for
    an operator). Chains with none are left out. One query on PostgreSQL (DISTINCT ON), one per
    chain elsewhere (the quick start's SQLite)."""
    chains = set(chains)
    if not chains:
        return {}
    candidates = (
        Delivery.objects.filter(status__in=OPEN)
        .exclude(status=DeliveryStatus.PENDING, parked_reason=ParkedReason.ORDERING)
        .order_by("endpoint_id", "ordering_key", "sequence")
    )
    if connection.vendor == "postgresql":
        heads = candidates.filter(chains_match(chains)).distinct("endpoint_id", "ordering_key")
    else:
        heads = [head for chain in chains if (head := candidates.filter(chains_match([chain])).first())]
    return {(head.endpoint_id, head.ordering_key): head for head in heads}


def blocking_head(delivery: Delivery) -> Delivery | None:
    """For a delivery of an ordered chain: the delivery its chain waits for (blocking_heads)."""
    if delivery.ordering_key is None:
        return None
    return blocking_heads([(delivery.endpoint_id, delivery.ordering_key)]).get(
        (delivery.endpoint_id, delivery.ordering_key)
    )
