"""Fan-out: each event becomes one Delivery per subscribed endpoint."""

from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from endpoints.models import Endpoint

from .models import Delivery, Event


def fan_out(event_id: str) -> list[int]:
    """Create the deliveries of one event and return the ids of those due now."""
    return [delivery.pk for delivery in fan_out_events([event_id]) if delivery.next_attempt_at is not None]


def fan_out_events(event_ids: Iterable[str]) -> list[Delivery]:
    """Create the deliveries of some events (a second run creates nothing) and return them,
    each with its `endpoint` loaded (`consecutive_failures` says where to route it).

    The events not yet fanned out are locked (in primary-key order, so two runs over
    overlapping batches cannot deadlock) while their deliveries are written, and marked fanned
    out in the same transaction. Whatever the batch size, that is four statements: lock the
    events, read the endpoints of their tenants, one bulk INSERT, one UPDATE.
    """
    now = timezone.now()
    with transaction.atomic():
        events = list(
            Event.objects.select_for_update()
            .filter(pk__in=list(event_ids), fanned_out_at__isnull=True)
            .order_by("pk")
            .only("id", "tenant", "type")
        )
        if not events:
            return []
        by_tenant: dict[str, list[Endpoint]] = defaultdict(list)
        endpoints = Endpoint.objects.filter(tenant__in={event.tenant for event in events}, is_active=True).only(
            "id", "tenant", "event_types", "paused_until", "consecutive_failures"
        )
        for endpoint in endpoints.order_by("pk"):
            by_tenant[endpoint.tenant].append(endpoint)
        queued_until = now + timedelta(seconds=settings.WEBHOOKS_REQUEUE_AFTER)
        deliveries = Delivery.objects.bulk_create(
            [
                # An endpoint paused by its circuit breaker gets its delivery parked, unsent.
                Delivery(event=event, endpoint=endpoint, next_attempt_at=now, queued_until=queued_until)
                if endpoint.paused_until is None or endpoint.paused_until <= now
                else Delivery(event=event, endpoint=endpoint, next_attempt_at=None, queued_until=None)
                for event in events
                for endpoint in by_tenant[event.tenant]
                if endpoint.receives(event.type)
            ],
            batch_size=1000,
        )
        Event.objects.filter(pk__in=[event.pk for event in events]).update(fanned_out_at=now)
    return deliveries
