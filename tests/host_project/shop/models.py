from django.db import models


class Order(models.Model):
    """An order of the host's shop; saving a new one publishes `order.created` (settings)."""

    account = models.CharField(max_length=100, default="")
    total = models.DecimalField(max_digits=10, decimal_places=2)

    def __str__(self) -> str:
        return f"order {self.pk}"
