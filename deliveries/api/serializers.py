"""What the API reads and writes. Validation of endpoint fields is the model's own
(`Endpoint.save()` runs `full_clean()`); the serializers here only check JSON types, so the API
accepts exactly what admin and host code may write, with the same messages.
"""

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from endpoints.models import SignatureEncoding, SignatureScheme
from endpoints.rate_limits import MAX_RATE_LIMIT, MAX_RATE_LIMIT_PERIOD

from ..models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from .waiting import WaitingSerializer, waiting_data

# How long older secrets keep signing after a rotation, at most (a receiver deploys the new one).
MAX_GRACE_SECONDS = 30 * 86400


def webhook_id(event_uuid) -> str:
    """The `evt_...` id of an event by its primary key, as receivers get it in `webhook-id`."""
    return f"evt_{event_uuid.hex}"


class EndpointSerializer(serializers.Serializer):
    """An endpoint as every read shows it: no secret, sensitive header values as `[hidden]`."""

    id = serializers.IntegerField(read_only=True)
    url = serializers.CharField(max_length=2000)
    description = serializers.CharField(max_length=200, allow_blank=True, default="")
    event_types = serializers.ListField(
        child=serializers.CharField(), default=list, help_text="Patterns such as order.*; empty: every type."
    )
    headers = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        default=dict,
        help_text="Extra request headers. Sensitive values read back as [hidden]; send [hidden] to keep one.",
    )
    sensitive_headers = serializers.ListField(child=serializers.CharField(), default=list)
    signature_scheme = serializers.ChoiceField(choices=SignatureScheme.choices, default=SignatureScheme.STANDARD)
    signature_header = serializers.CharField(max_length=100, allow_blank=True, default="")
    signature_encoding = serializers.ChoiceField(
        choices=[("", "default"), *SignatureEncoding.choices], allow_blank=True, default=""
    )
    signature_prefix = serializers.CharField(max_length=32, allow_blank=True, trim_whitespace=False, default="")
    rate_limit = serializers.IntegerField(
        allow_null=True,
        default=None,
        min_value=1,
        max_value=MAX_RATE_LIMIT,
        help_text="At most this many requests per rate_limit_period, from all workers together; null: no limit.",
    )
    rate_limit_period = serializers.IntegerField(
        allow_null=True,
        default=None,
        min_value=1,
        max_value=MAX_RATE_LIMIT_PERIOD,
        help_text="The rate limit's period in seconds; set with rate_limit, null with it.",
    )
    # No default: a PUT without it leaves the state alone (an auto-disabled endpoint stays disabled).
    is_active = serializers.BooleanField(
        required=False, help_text="false disables the endpoint; true enables it; absent: unchanged (new: true)."
    )
    disabled_reason = serializers.CharField(read_only=True)
    disabled_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class EndpointDetailSerializer(EndpointSerializer):
    """One endpoint: also the public key receivers verify standard_ed25519 signatures with."""

    public_key = serializers.CharField(read_only=True, allow_null=True, help_text="standard_ed25519 only.")
    verification_status = serializers.CharField(
        read_only=True,
        help_text="unverified: deliveries wait until the URL answers the webhook handshake (OPTIONS with "
        "WebHook-Request-Origin); verified, waived or not_required: deliveries are sent.",
    )


class EndpointSecretSerializer(EndpointDetailSerializer):
    """The answer of a create (and of a change of scheme that switched the key kind): the new
    shared secret, shown this once (null for standard_ed25519: its public key is what receivers use)."""

    secret = serializers.CharField(read_only=True, allow_null=True)
    key_switched_until = serializers.DateTimeField(read_only=True, allow_null=True, required=False)


class RotateSecretSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        default=86400,
        help_text="How long the older secrets keep signing (default 24 h).",
    )


class RotatedSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(allow_null=True, help_text="The new shared secret, shown this once.")
    public_key = serializers.CharField(allow_null=True, help_text="standard_ed25519: the new public key.")
    previous_expire_at = serializers.DateTimeField(help_text="Until when the older secrets keep signing.")


class EventTypeSerializer(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    schema = serializers.JSONField(allow_null=True, help_text="The JSON Schema of its payload, or null.")


class EventSerializer(serializers.Serializer):
    id = serializers.SerializerMethodField(help_text="The id receivers get in webhook-id.")
    type = serializers.CharField()
    created_at = serializers.DateTimeField()
    ordering_key = serializers.CharField(
        allow_null=True,
        help_text="Its ordering key: each endpoint gets the events of one key one at a time, in publish order; "
        "null: unordered.",
    )
    data = serializers.SerializerMethodField(help_text="The payload, as sent in the body's data.")

    def get_id(self, event: Event) -> str:
        return event.webhook_id

    @extend_schema_field(OpenApiTypes.ANY)
    def get_data(self, event: Event) -> Any:
        # payload_json is the text the bodies carry (key order kept); jsonb `payload` reorders keys.
        return json.loads(event.payload_json) if event.payload_json is not None else event.payload


class EventDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = ["id", "endpoint_id", "status", "attempt_count", "last_status_code", "next_attempt_at", "updated_at"]


class EventDetailSerializer(EventSerializer):
    deliveries = EventDeliverySerializer(many=True, help_text="Its delivery to each endpoint.")


# `waiting` reads the serializer context of deliveries.api.waiting.waiting_context.
class DeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.SerializerMethodField()
    event_type = serializers.CharField(source="event.type")
    status = serializers.ChoiceField(
        choices=DeliveryStatus.choices,
        help_text="pending: still to be sent (see waiting); succeeded; failed: gave up (retry sends it again); "
        "cancelled: not to be sent (retry sends it after all).",
    )
    ordering_key = serializers.CharField(allow_null=True, help_text="Its event's ordering key (null: unordered).")
    sequence = serializers.IntegerField(
        allow_null=True,
        help_text="Its place in the chain of its ordering key to its endpoint (1, 2, 3...; sent in "
        "Webhook-Sequence); null: unordered.",
    )
    waiting = serializers.SerializerMethodField(help_text="What it waits for while pending; null otherwise.")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "endpoint_id",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "ordering_key",
            "sequence",
            "waiting",
            "created_at",
            "updated_at",
        ]

    def get_event_id(self, delivery: Delivery) -> str:
        return webhook_id(delivery.event_id)

    @extend_schema_field(WaitingSerializer(allow_null=True))
    def get_waiting(self, delivery: Delivery) -> dict | None:
        data = waiting_data(delivery, self.context)
        return WaitingSerializer(data).data if data is not None else None


class AttemptSerializer(serializers.ModelSerializer):
    """One request and its answer, headers redacted as recorded (deliveries/redaction.py)."""

    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "trigger",
            "started_at",
            "duration_ms",
            "request_headers",
            "response_status",
            "response_headers",
            "response_body",
            "error_class",
            "error_message",
            "outcome",
            "body_sha256",
        ]


class DeliveryDetailSerializer(DeliverySerializer):
    attempts = AttemptSerializer(many=True)

    class Meta(DeliverySerializer.Meta):
        fields = [*DeliverySerializer.Meta.fields, "attempts"]


class RetrySerializer(serializers.Serializer):
    queued = serializers.BooleanField()
    detail = serializers.CharField()


class CancelSerializer(serializers.Serializer):
    cancelled = serializers.BooleanField()
    detail = serializers.CharField(help_text="What follows: it will not be sent; the next of its ordering key goes.")
