"""Signals sent by the endpoints app.

- endpoint_disabled(sender=Endpoint, endpoint, reason): after the disabling transaction commits.
- endpoint_enabled(sender=Endpoint, endpoint): the deliveries app makes kept deliveries due.
"""

from django.dispatch import Signal

endpoint_disabled = Signal()
endpoint_enabled = Signal()
