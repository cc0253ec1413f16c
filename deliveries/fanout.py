"""Fan-out: one event becomes one Delivery per subscribed endpoint."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from endpoints.models import Endpoint

from .models import Delivery, Event


def fan_out(event_id: str) -> list[int]:
    """Create the deliveries of an event and return their ids; a second run creates nothing.

    The event row is locked while its deliveries are written in one transaction, and marked
    fanned out in the same transaction, so two concurrent runs cannot both create them.
    """
    now = timezone.now()
    with transaction.atomic():
        event = Event.objects.select_for_update().filter(pk=event_id, fanned_out_at__isnull=True).first()
        if event is None:
            return []
        endpoints = Endpoint.objects.filter(tenant=event.tenant, is_active=True).only(
            "id", "event_types", "paused_until"
        )
        queued_until = now + timedelta(seconds=settings.WEBHOOKS_REQUEUE_AFTER)
        deliveries = Delivery.objects.bulk_create(
            [
                # An endpoint paused by its circuit breaker gets its delivery parked, unsent.
                Delivery(event=event, endpoint=endpoint, next_attempt_at=now, queued_until=queued_until)
                if endpoint.paused_until is None or endpoint.paused_until <= now
                else Delivery(event=event, endpoint=endpoint, next_attempt_at=None, queued_until=None)
                for endpoint in endpoints
                if endpoint.receives(event.type)
            ],
            batch_size=1000,
        )
        Event.objects.filter(pk=event.pk).update(fanned_out_at=now)
    return [delivery.pk for delivery in deliveries if delivery.next_attempt_at is not None]
