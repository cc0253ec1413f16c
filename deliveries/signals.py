"""Signals the host can connect to. All are sent after the transaction that caused them commits.

- endpoint_unhealthy(sender=Endpoint, endpoint, window_seconds, success_rate, attempts): the
  success rate over a window fell below WEBHOOKS_HEALTH_THRESHOLD (once, until recovered).
- endpoint_recovered(sender=Endpoint, endpoint, window_seconds, success_rate, attempts): it is
  back at or above the threshold.
- endpoint_disabled lives in endpoints.signals (410 Gone, or failing for
  WEBHOOKS_AUTO_DISABLE_AFTER without a success).
"""

from django.dispatch import Signal

endpoint_unhealthy = Signal()
endpoint_recovered = Signal()
