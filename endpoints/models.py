"""Who receives webhooks: endpoints, their signing secrets and what they subscribe to."""

import base64
import binascii
import secrets as random_secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from . import signals
from .event_types import matches
from .validation import validate_custom_headers, validate_event_type_patterns, validate_webhook_url

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def generate_secret() -> str:
    """A new signing secret: `whsec_` + base64 of 32 random bytes (Standard Webhooks form)."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def validate_secret(value: str) -> None:
    """A secret is `whsec_` followed by base64 of 24 to 64 bytes."""
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ValidationError("Secret must start with 'whsec_'.", code="secret")
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("Secret must be 'whsec_' followed by base64.", code="secret") from None
    if not 24 <= len(key) <= 64:
        raise ValidationError("Secret must encode 24 to 64 random bytes.", code="secret")


class SignatureScheme(models.TextChoices):
    STANDARD = "standard", "Standard Webhooks (webhook-signature)"
    TIMESTAMPED_HEX = "timestamped_hex", "Stripe-compatible (X-Webhook-Signature: t=..,v1=..)"


class Endpoint(models.Model):
    """An HTTP URL that receives the events of one tenant whose types match its patterns.

    Creating one generates a signing secret (`endpoint.secret`) unless one is given with
    `Endpoint(secret="whsec_...")`. Saving validates every field, so invalid input raises
    ValidationError and writes nothing.
    """

    url = models.CharField(max_length=2000, validators=[validate_webhook_url])
    tenant = models.CharField(
        max_length=100, blank=True, default="", help_text="Owner key; events go only to endpoints of their tenant."
    )
    description = models.CharField(max_length=200, blank=True, default="")
    event_types = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_event_type_patterns],
        help_text="Patterns such as ['order.*', 'invoice.paid']; empty receives every type.",
    )
    is_active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    signature_scheme = models.CharField(
        max_length=20, choices=SignatureScheme.choices, default=SignatureScheme.STANDARD
    )
    headers = models.JSONField(
        default=dict, blank=True, validators=[validate_custom_headers], help_text="Extra request headers."
    )
    # Circuit breaker and health, maintained by the deliveries app (see deliveries/breaker.py).
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    paused_until = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Circuit breaker open: no sends until then, then one probe."
    )
    failing_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="First failure since the last success."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # Operator actions beyond add/change/delete/view; a read-only operator gets only "view".
        permissions = [
            ("rotate_secret", "Can rotate endpoint signing secrets"),
            ("enable_disable_endpoint", "Can enable and disable endpoints"),
            ("send_test_event", "Can send test events to endpoints"),
        ]
        indexes = [
            models.Index(fields=["tenant", "is_active"], name="endpoint_tenant_active"),
            models.Index(fields=["paused_until"], condition=Q(paused_until__isnull=False), name="endpoint_paused"),
            models.Index(fields=["failing_since"], condition=Q(failing_since__isnull=False), name="endpoint_failing"),
        ]

    def __init__(self, *args, **kwargs):
        initial_secret = kwargs.pop("secret", None)
        super().__init__(*args, **kwargs)
        self._initial_secret = initial_secret

    def __str__(self) -> str:
        return self.url

    def save(self, *args, **kwargs) -> None:
        self.full_clean(exclude=["created_at", "updated_at"])
        creating = self._state.adding
        with transaction.atomic():
            super().save(*args, **kwargs)
            if creating:
                self.secrets.create(secret=self._initial_secret or generate_secret())
                self._initial_secret = None

    def clean(self) -> None:
        if self._initial_secret is not None:
            validate_secret(self._initial_secret)

    def receives(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to `event_type`."""
        return matches(self.event_types, event_type)

    def live_secrets(self) -> list[str]:
        """Secrets that sign right now, newest first."""
        return [s.secret for s in self.secrets.live()]

    @property
    def secret(self) -> str | None:
        """The current (newest) signing secret."""
        newest = self.secrets.live().first()
        return newest.secret if newest else None

    def rotate_secret(self, grace: timedelta = timedelta(hours=24), new_secret: str | None = None) -> str:
        """Add a new signing secret; older live secrets keep signing for `grace`, then expire."""
        new_secret = new_secret or generate_secret()
        validate_secret(new_secret)
        now = timezone.now()
        with transaction.atomic():
            self.secrets.live(now).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now + grace)).update(
                expires_at=now + grace
            )
            self.secrets.create(secret=new_secret)
        return new_secret

    def disable(self, reason: str) -> None:
        """Stop sending to this endpoint; its pending deliveries are kept."""
        now = timezone.now()
        Endpoint.objects.filter(pk=self.pk).update(
            is_active=False, disabled_reason=reason[:200], disabled_at=now, updated_at=now
        )
        self.is_active, self.disabled_reason, self.disabled_at = False, reason[:200], now
        transaction.on_commit(lambda: signals.endpoint_disabled.send(sender=Endpoint, endpoint=self, reason=reason))

    def enable(self) -> None:
        """Resume sending with a closed circuit breaker; deliveries kept while disabled become due."""
        now = timezone.now()
        reset = {"consecutive_failures": 0, "paused_until": None, "failing_since": None}
        Endpoint.objects.filter(pk=self.pk).update(
            is_active=True, disabled_reason="", disabled_at=None, updated_at=now, **reset
        )
        self.is_active, self.disabled_reason, self.disabled_at = True, "", None
        for field, value in reset.items():
            setattr(self, field, value)
        signals.endpoint_enabled.send(sender=Endpoint, endpoint=self)


class EndpointSecretQuerySet(models.QuerySet):
    def live(self, now=None):
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).order_by("-created_at", "-id")


class EndpointSecret(models.Model):
    """A signing secret of an endpoint. The newest signs; older ones sign too until they expire
    (rotation with overlap: the signature header then carries one signature per live secret)."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="secrets")
    secret = models.CharField(max_length=200, validators=[validate_secret])
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = EndpointSecretQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["endpoint", "expires_at"], name="secret_endpoint_expiry")]

    def __str__(self) -> str:
        return f"secret of endpoint {self.endpoint_id} created {self.created_at:%Y-%m-%d %H:%M}"
