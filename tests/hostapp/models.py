"""Host models for the model-hook tests.

`Order` is wired up in tests/settings.py (WEBHOOKS_MODEL_HOOKS, default serializer, tenant
attribute, a filter); `Shipment` with the decorator (own serializer, no coalescing).
"""

import uuid

from django.core.files.storage import InMemoryStorage
from django.db import models

from deliveries import register_model_hook


def invoice_storage() -> InMemoryStorage:
    """Files stay in memory (no writes under the project) and have public URLs."""
    return _storage


_storage = InMemoryStorage(base_url="https://files.example.com/")


class Customer(models.Model):
    """Who placed an order; orders refer to it by foreign key."""

    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    """An order of the host shop: one field of each kind the default serializer handles."""

    reference = models.UUIDField(default=uuid.uuid4)
    tenant = models.CharField(max_length=100, blank=True, default="")
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    placed_at = models.DateTimeField(null=True, blank=True)
    ships_on = models.DateField(null=True, blank=True)
    invoice = models.FileField(upload_to="invoices/", storage=invoice_storage, blank=True)

    def __str__(self) -> str:
        return f"order {self.pk}"


def shipment_payload(shipment: "Shipment") -> dict:
    return {"shipment": shipment.pk, "carrier": shipment.carrier.upper()}


@register_model_hook(
    created="shipment.created", updated="shipment.updated", serializer=shipment_payload, coalesce=False
)
class Shipment(models.Model):
    """Registered with the decorator: every save is its own event."""

    carrier = models.CharField(max_length=50)

    def __str__(self) -> str:
        return f"shipment {self.pk}"
