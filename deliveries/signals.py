"""Signals the host can connect to. All are sent after the transaction that caused them commits.

- endpoint_unhealthy(sender=Endpoint, endpoint, window_seconds, success_rate, attempts): the
  success rate over a window fell below WEBHOOKS_HEALTH_THRESHOLD (once, until recovered).
- endpoint_recovered(sender=Endpoint, endpoint, window_seconds, success_rate, attempts): it is
  back at or above the threshold.
- delivery_succeeded(sender=Delivery, delivery, attempt): a 2xx was received.
- delivery_retrying(sender=Delivery, delivery, attempt, next_attempt_at): the attempt failed
  and another is scheduled.
- delivery_failed(sender=Delivery, delivery, attempt, reason): retries ran out or the answer was
  final (4xx, 3xx, 410, blocked address); the delivery is in the dead letter.

`delivery` is the Delivery with its new state; `attempt` the DeliveryAttempt just recorded.

- endpoint_disabled lives in endpoints.signals (410 Gone, or failing for
  WEBHOOKS_AUTO_DISABLE_AFTER without a success).
"""

from django.dispatch import Signal

delivery_succeeded = Signal()
delivery_retrying = Signal()
delivery_failed = Signal()
endpoint_unhealthy = Signal()
endpoint_recovered = Signal()
