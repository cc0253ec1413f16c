"""Signals sent by the endpoints app.

- endpoint_disabled(sender=Endpoint, endpoint, reason): after the disabling transaction commits.
- endpoint_enabled(sender=Endpoint, endpoint): the deliveries app makes kept deliveries due.
- verification_requested(sender=Endpoint, endpoint): after the transaction that made the
  endpoint unverified commits; the deliveries app runs the handshake.
"""

from django.dispatch import Signal

endpoint_disabled = Signal()
endpoint_enabled = Signal()
verification_requested = Signal()
