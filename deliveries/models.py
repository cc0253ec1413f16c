"""What is sent: events, their deliveries to endpoints, and every attempt."""

import uuid
from datetime import timedelta

from django.db import models
from django.db.models import Q

from endpoints.models import Endpoint


class Event(models.Model):
    """Something that happened in the host product, published once and fanned out to the
    endpoints of its tenant. Its id is the `webhook-id` every receiver dedupes on.

    `payload_json` is the payload exactly as `publish()` serialized it: the `data` of every
    body sent, byte for byte. `payload` holds the same value as `jsonb`, for queries and the
    JSON tools of PostgreSQL; it is not what is sent, because `jsonb` reorders object keys and
    rewrites numbers (`1e16` comes back as `10000000000000000`). `payload_json` is null for
    rows written before migration 0004 and not filled by 0005, and for rows written with only
    `payload` (`Event.objects.create(payload=...)`): those are sent as `payload` serializes,
    as they always were (`sending.render_body`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.CharField(max_length=100, blank=True, default="")
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    payload_json = models.TextField(null=True, blank=True, editable=False)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    # Events of one tenant and ordering key reach each endpoint in the order they were published
    # (created_at, then id): deliveries.ordering.
    ordering_key = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="event_unique_idempotency_key",
            )
        ]
        indexes = [
            # The sweep looks for committed events never fanned out.
            models.Index(fields=["created_at"], condition=Q(fanned_out_at__isnull=True), name="event_not_fanned_out"),
            models.Index(fields=["tenant", "type", "created_at"], name="event_tenant_type_time"),
            # The API's events/ list: a tenant's events in keyset order (created_at, id), so a page,
            # with or without ?after=, reads its rows in order and stops (migration 0007).
            models.Index(fields=["tenant", "created_at", "id"], name="event_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id}"

    @property
    def webhook_id(self) -> str:
        """The id sent in `webhook-id`, stable across every retry of every delivery."""
        return f"evt_{self.id.hex}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class ParkedReason(models.TextChoices):
    """Why a pending delivery waits for something other than its retry schedule
    (deliveries.scheduling). Empty for rows parked before reasons were recorded (treated as
    waiting for their endpoint) and for deliveries that are not waiting."""

    NONE = "", "-"
    DISABLED = "disabled", "Endpoint disabled"
    UNVERIFIED = "unverified", "Endpoint not verified"
    BREAKER = "breaker", "Circuit breaker"
    RATE_LIMIT = "rate_limit", "Rate limit"
    ORDERING = "ordering", "Earlier delivery of its ordering key"


class Delivery(models.Model):
    """One event to one endpoint. Pending until a 2xx (succeeded) or until retries run out or
    the receiver's answer is final (failed: the dead letter, kept for operators to retry), or
    until an operator cancels it.

    The scheduling fields (`status`, `next_attempt_at`, `locked_until`, `queued_until`,
    `parked_reason`) have one writer, deliveries.scheduling, which names the states they encode.
    `next_attempt_at` is when the next try is due (null while parked, and once finished).
    `locked_until` is a sender's lease: while it lies in the future no other worker may send.
    `queued_until` says a broker message is expected to run it by then, so the sweep leaves it
    alone; past it, the message is presumed lost and the sweep enqueues it again.
    `ordering_key` and `sequence` place it in its endpoint's chain of that key (the event's key;
    `sequence` counts 1, 2, 3... per endpoint and key).
    """

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    queued_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    parked_reason = models.CharField(max_length=12, choices=ParkedReason.choices, blank=True, default="")
    ordering_key = models.CharField(max_length=200, null=True, blank=True)
    sequence = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        permissions = [
            ("retry_delivery", "Can retry deliveries"),
            ("replay_delivery", "Can replay deliveries of an endpoint since a time"),
            ("cancel_delivery", "Can cancel pending deliveries"),
        ]
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="delivery_unique_event_endpoint")]
        indexes = [
            # The sweep: due pending deliveries, oldest first.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="delivery_due"),
            models.Index(fields=["endpoint", "status", "created_at"], name="delivery_endpoint_status"),
            models.Index(fields=["status", "updated_at"], name="delivery_status_updated"),
            # The open (pending or failed) deliveries of one endpoint's ordering key, in sequence
            # (deliveries.ordering).
            models.Index(
                fields=["endpoint", "ordering_key", "sequence"],
                condition=Q(status__in=["pending", "failed"], ordering_key__isnull=False),
                name="delivery_ordering_open",
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} to endpoint {self.endpoint_id}"


class OrderingKey(models.Model):
    """The chain of one ordering key to one endpoint: the sequence number its last delivery
    took. Its row is the lock that orders fan-out against completions (deliveries.ordering)."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="ordering_keys")
    key = models.CharField(max_length=200)
    last_sequence = models.PositiveBigIntegerField(default=0)
    # When its last delivery was numbered: retention forgets keys idle past the longer retention
    # period with no delivery left (a later event of the key starts again at sequence 1).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["endpoint", "key"], name="ordering_key_unique_endpoint_key")]

    def __str__(self) -> str:
        return f"ordering key {self.key!r} of endpoint {self.endpoint_id}"


class AttemptTrigger(models.TextChoices):
    AUTOMATIC = "automatic", "Automatic"
    MANUAL = "manual", "Manual retry"
    REPLAY = "replay", "Replay"


class DeliveryAttempt(models.Model):
    """One HTTP request for a delivery and what came back (or why nothing did)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=10, choices=AttemptTrigger.choices, default=AttemptTrigger.AUTOMATIC)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    request_headers = models.JSONField(default=dict)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True, default="")
    error_class = models.CharField(max_length=100, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    outcome = models.CharField(max_length=20, blank=True, default="")
    # The hex SHA-256 of the exact body bytes sent (and signed): what was sent, provably, even
    # if the event's row changed later. Empty for attempts recorded before migration 0004.
    body_sha256 = models.CharField(max_length=64, blank=True, default="", editable=False)

    class Meta:
        ordering = ["delivery_id", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="attempt_unique_number")]
        indexes = [models.Index(fields=["started_at"], name="attempt_started_at")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"


class EndpointHealth(models.Model):
    """The last verdict of the health check for one endpoint and one sliding window.

    Alerts fire on a change of verdict only, so an endpoint is reported unhealthy at most once
    per window until it has recovered (and then reported recovered once).
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="health")
    window_seconds = models.PositiveIntegerField()
    unhealthy = models.BooleanField(default=False)
    success_rate = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField()
    checked_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "endpoint health"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "window_seconds"], name="health_unique_endpoint_window")
        ]

    def __str__(self) -> str:
        state = "unhealthy" if self.unhealthy else "healthy"
        return f"endpoint {self.endpoint_id} {state} over {self.window_seconds} s"


class ApiIdempotencyKey(models.Model):
    """The first answer to a POST of the customers' API sent with an `Idempotency-Key` header,
    kept 24 hours (deliveries.api.idempotency) so a repeat gets it again instead of acting twice.

    `response_body` is the JSON answer encrypted with endpoints.secret_box: an answer that shows
    a signing secret once (create, rotate-secret) must not sit in the database in clear.
    """

    KEPT_FOR = timedelta(hours=24)

    tenant = models.CharField(max_length=200)
    key = models.CharField(max_length=255)
    route = models.CharField(max_length=300, help_text="Method and path of the first request.")
    fingerprint = models.CharField(max_length=64, help_text="sha256 of the first request's route and body.")
    response_status = models.PositiveSmallIntegerField()
    response_body = models.TextField(help_text="The JSON answer, encrypted (endpoints.secret_box).")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="api_idempotency_unique_tenant_key")]

    def __str__(self) -> str:
        return f"{self.route} with Idempotency-Key {self.key!r} of tenant {self.tenant!r}"
