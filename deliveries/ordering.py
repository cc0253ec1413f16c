"""Per-key ordering: the deliveries of one ordering key to one endpoint go out one at a time.

`publish(..., ordering_key="order-7")` puts the event in the chain of that key at each endpoint
it reaches. A chain (`OrderingKey`, one row per endpoint and key) numbers its deliveries 1, 2,
3... in the order the events were published (their `created_at`, then id). Its rule: a delivery
is not sent while an earlier delivery of its chain is pending. So at fan-out a delivery whose
chain already has a pending delivery is parked (`ParkedReason.ORDERING`); when a delivery of
the chain finishes (succeeded, failed for good, or cancelled by an operator) and no other of
its chain is still pending and unparked, the next one in sequence becomes due. Retries keep the
order: a delivery waiting to be retried is pending, so the rest of its key waits behind it.
Other keys, and other endpoints, are never held up.

Both sides take the chain's row lock (SELECT ... FOR UPDATE) in the transaction that writes
them, so a fan-out and a completion of the same chain cannot miss each other: whichever
commits second sees what the first wrote. Locks are taken in primary-key order.

An operator's manual retry of an older delivery (already failed or cancelled) sends it at once:
it does not wait for the chain, and the deliveries of the key that are still parked wait for it
as they would for the head. Its `Webhook-Sequence` header tells the receiver it is an old one.
"""

from collections.abc import Iterable
from functools import partial

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .models import Delivery, DeliveryStatus, OrderingKey, ParkedReason
from .scheduling import FINISHED, unpark

__all__ = ["advance", "blocking_head", "finished_chains", "place", "release_stalled"]

Chain = tuple[int, str]  # (endpoint id, ordering key)


def _lock(chains: Iterable[Chain], create: bool) -> dict[Chain, OrderingKey]:
    """Lock the rows of these chains, in primary-key order (created first, if asked)."""
    chains = set(chains)
    if create:
        OrderingKey.objects.bulk_create(
            [OrderingKey(endpoint_id=endpoint_id, key=key) for endpoint_id, key in chains], ignore_conflicts=True
        )
    match = Q()
    for endpoint_id, key in chains:
        match |= Q(endpoint_id=endpoint_id, key=key)
    rows = OrderingKey.objects.select_for_update().filter(match).order_by("pk")
    return {(row.endpoint_id, row.key): row for row in rows}


def _busy(chains: set[Chain]) -> set[Chain]:
    """The chains that have a pending delivery."""
    rows = (
        Delivery.objects.filter(
            status=DeliveryStatus.PENDING,
            endpoint_id__in={endpoint_id for endpoint_id, _ in chains},
            ordering_key__in={key for _, key in chains},
        )
        .values_list("endpoint_id", "ordering_key")
        .distinct()
    )
    return set(rows) & chains


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
            # An earlier delivery of the key is pending: this one waits for it, whatever its
            # endpoint's state (the head alone waits for the endpoint).
            delivery.next_attempt_at = delivery.queued_until = None
            delivery.parked_reason = ParkedReason.ORDERING
        busy.add(chain)
    OrderingKey.objects.bulk_update(rows.values(), ["last_sequence"])


def advance(chains: Iterable[Chain]) -> list[int]:
    """After deliveries of these chains finished (succeeded, failed or cancelled), in the
    transaction that recorded it: make the next delivery of each chain due, if no other of the
    chain is still on its way. Returns the ids made due; they are enqueued after commit."""
    chains = set(chains)
    if not chains:
        return []
    _lock(chains, create=False)
    due: list[int] = []
    now = timezone.now()
    for endpoint_id, key in sorted(chains):
        pending = Delivery.objects.filter(endpoint_id=endpoint_id, ordering_key=key, status=DeliveryStatus.PENDING)
        if pending.exclude(parked_reason=ParkedReason.ORDERING).exists():
            continue  # one is still on its way (being retried, or an operator's retry)
        head = pending.order_by("sequence").values_list("pk", flat=True).first()
        if head is not None and unpark(Delivery.objects.filter(pk=head), now, reasons=[ParkedReason.ORDERING]):
            due.append(head)
    if due:
        transaction.on_commit(partial(_enqueue, due))
    return due


def _enqueue(delivery_ids: list[int]) -> None:
    from .tasks import enqueue_sends  # tasks imports the send path, which imports this module

    enqueue_sends(delivery_ids)


def finished_chains(deliveries: Iterable[tuple[Delivery, str]]) -> set[Chain]:
    """The chains of those (delivery, new status) pairs whose delivery just finished."""
    return {
        (delivery.endpoint_id, delivery.ordering_key)
        for delivery, status in deliveries
        if delivery.ordering_key is not None and status in FINISHED
    }


def release_stalled(limit: int = 100) -> list[int]:
    """For the health job: advance chains whose parked deliveries wait for nothing (their head was
    deleted with its event, or a write went astray), at most `limit` chains a run. Returns the
    ids made due. advance() re-checks each chain under its lock."""
    on_its_way = Delivery.objects.filter(
        endpoint_id=OuterRef("endpoint_id"), ordering_key=OuterRef("ordering_key"), status=DeliveryStatus.PENDING
    ).exclude(parked_reason=ParkedReason.ORDERING)
    stalled = (
        Delivery.objects.filter(
            status=DeliveryStatus.PENDING, ordering_key__isnull=False, parked_reason=ParkedReason.ORDERING
        )
        .exclude(Exists(on_its_way))
        .values_list("endpoint_id", "ordering_key")
        .distinct()[:limit]
    )
    chains = list(stalled)
    if not chains:
        return []
    with transaction.atomic():
        return advance(chains)


def blocking_head(delivery: Delivery) -> Delivery | None:
    """For a delivery parked by its ordering key: the pending delivery of its chain that it
    waits for (the lowest sequence not parked for ordering), or None."""
    if delivery.ordering_key is None:
        return None
    return (
        Delivery.objects.filter(
            endpoint_id=delivery.endpoint_id, ordering_key=delivery.ordering_key, status=DeliveryStatus.PENDING
        )
        .exclude(parked_reason=ParkedReason.ORDERING)
        .order_by("sequence")
        .first()
    )
