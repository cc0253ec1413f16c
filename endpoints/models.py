"""Who receives webhooks: endpoints, their signing secrets and what they subscribe to.

EndpointSecret lives in endpoints/signing_secrets.py, EndpointClientCertificate in
endpoints/client_certificates.py and SignatureScheme in endpoints/signature_formats.py; all are
importable from here, as ever.
"""

import json
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from . import custom_headers, rate_limits, secret_box, signals
from .client_certificates import EndpointClientCertificate
from .event_types import PatternSet, compiled_patterns
from .rate_adaptation import RateAdaptationMixin
from .rate_limits import RateLimitSlot
from .signature_formats import (
    SIGNATURE_SETTINGS,
    SignatureEncoding,
    SignatureScheme,
    signature_settings_errors,
    validate_signature_header,
    validate_signature_prefix,
)
from .signing_secrets import (
    SECRET_BYTES,
    SECRET_PREFIX,
    EndpointSecret,
    EndpointSecretQuerySet,
    generate_secret,
    validate_secret,
)
from .validation import (
    validate_custom_headers,
    validate_event_type_patterns,
    validate_plain_text,
    validate_sensitive_header_names,
    validate_webhook_url,
)
from .verification_state import VerificationMixin, VerificationStatus

__all__ = [
    "KEY_SWITCH_GRACE",
    "SECRET_BYTES",
    "SECRET_PREFIX",
    "Endpoint",
    "EndpointClientCertificate",
    "EndpointSecret",
    "EndpointSecretQuerySet",
    "RateLimitSlot",
    "SignatureScheme",
    "VerificationStatus",
    "generate_secret",
    "validate_secret",
]

# A change of signature_scheme between a shared-secret scheme and standard_ed25519 rotates in a
# key of the new kind; the older keys keep signing this long, as after rotate_secret().
KEY_SWITCH_GRACE = timedelta(hours=24)

SCHEME_ERRORS = {
    "invalid_choice": f"Signature scheme %(value)r is not a valid choice; use one of: {', '.join(SignatureScheme)}."
}


class Endpoint(VerificationMixin, RateAdaptationMixin, models.Model):
    """An HTTP URL that receives the events of one tenant whose types match its patterns.

    Creating one generates a signing secret (`endpoint.secret`) unless one is given with
    `Endpoint(secret="whsec_...")`; with signature_scheme "standard_ed25519" that is an ed25519
    private key `whsk_...`, and `endpoint.public_key` (`whpk_...`) is what the receiver verifies
    with. Saving validates every field, so invalid input raises ValidationError and writes nothing.
    Requests are signed in `signature_scheme`, with the header name, encoding and prefix that
    scheme takes (endpoints/signature_formats.py). Changing signature_scheme between a
    shared-secret scheme and standard_ed25519 rotates in a key of the new kind
    (`key_switched_until` then says until when the older keys sign).

    `Endpoint(rate_limit=60, rate_limit_period=10)`: at most 60 requests per 10 s, fleet-wide
    (endpoints/rate_limits.py); both or neither; a 429 lowers it for a while (rate_adaptation.py).

    Verification (README "Endpoint verification"): an endpoint created with
    `verification_status="unverified"`, or marked with `require_verification()`, receives
    nothing until its URL answers the handshake; changing the URL of an endpoint under
    verification (unverified, verified or waived) makes it unverified again.
    """

    url = models.CharField(max_length=2000, validators=[validate_webhook_url])
    tenant = models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[validate_plain_text],
        help_text="Owner key; events go only to endpoints of their tenant.",
    )
    description = models.CharField(max_length=200, blank=True, default="", validators=[validate_plain_text])
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
        max_length=20, choices=SignatureScheme.choices, default=SignatureScheme.STANDARD, error_messages=SCHEME_ERRORS
    )
    # What the scheme lets an endpoint set (see endpoints/signature_formats.py); blank: the
    # scheme's default. A value the scheme does not use is refused, not ignored.
    signature_header = models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[validate_signature_header],
        help_text="timestamped_hex and body_hmac: the signature header's name; blank: X-Webhook-Signature.",
    )
    signature_encoding = models.CharField(
        max_length=10,
        blank=True,
        default="",
        choices=SignatureEncoding.choices,
        error_messages={
            "invalid_choice": "Signature encoding %(value)r is not a valid choice; use hex or base64 (blank: hex)."
        },
        help_text="body_hmac only: how the HMAC is written; blank: hex.",
    )
    signature_prefix = models.CharField(
        max_length=32,
        blank=True,
        default="",
        validators=[validate_signature_prefix],
        help_text="body_hmac only: text before the HMAC, e.g. sha256= as GitHub sends it.",
    )
    headers = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_custom_headers],
        help_text=f"Extra request headers. Values of sensitive headers are stored encrypted and shown as "
        f"{custom_headers.HIDDEN}: leave {custom_headers.HIDDEN} to keep a value, write a new value to replace it.",
    )
    sensitive_headers = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_sensitive_header_names],
        help_text="Names of custom headers holding credentials, e.g. ['Authorization']: their values are stored "
        "encrypted, never shown and never recorded (names with auth, token, secret, key, ... are treated so anyway).",
    )
    # The values of the sensitive custom headers: a secret_box token of a JSON object, or "" for
    # none (see endpoints/custom_headers.py). Written by save(); read by request_headers().
    encrypted_headers = models.TextField(blank=True, default="", editable=False)
    # Circuit breaker and health, maintained by the deliveries app (see deliveries/breaker.py).
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    paused_until = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Circuit breaker open: no sends until then, then one probe."
    )
    failing_since = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="First failure since the last success."
    )
    # Verification (deliveries/verification.py): the handshake's state, its last outcome, and
    # when it is due next (also the lease of the handshake in flight, as locked_until is for sends).
    verification_status = models.CharField(
        max_length=12,
        choices=VerificationStatus.choices,
        default=VerificationStatus.NOT_REQUIRED,
        help_text="unverified: deliveries wait until the URL answers the handshake.",
    )
    verified_at = models.DateTimeField(null=True, blank=True, editable=False)
    verification_due_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the next handshake is due (unverified only)."
    )
    verification_attempts = models.PositiveIntegerField(default=0, editable=False)
    verification_error = models.CharField(max_length=500, blank=True, default="", editable=False)
    # At most rate_limit requests per rate_limit_period seconds, fleet-wide (endpoints/rate_limits.py).
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, validators=rate_limits.RATE_LIMIT_VALIDATORS, help_text="Requests per period at most."
    )
    rate_limit_period = models.PositiveIntegerField(
        null=True, blank=True, validators=rate_limits.RATE_LIMIT_PERIOD_VALIDATORS, help_text="In seconds."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # Operator actions beyond add/change/delete/view; a read-only operator gets only "view".
        permissions = [
            ("rotate_secret", "Can rotate endpoint signing secrets"),
            ("enable_disable_endpoint", "Can enable and disable endpoints"),
            ("send_test_event", "Can send test events to endpoints"),
            ("verify_endpoint", "Can verify endpoints or waive their verification"),
        ]
        indexes = [
            models.Index(fields=["tenant", "is_active"], name="endpoint_tenant_active"),
            models.Index(fields=["paused_until"], condition=Q(paused_until__isnull=False), name="endpoint_paused"),
            models.Index(fields=["failing_since"], condition=Q(failing_since__isnull=False), name="endpoint_failing"),
            # The sweep: handshakes due.
            models.Index(
                fields=["verification_due_at"],
                condition=Q(verification_status="unverified"),
                name="endpoint_unverified",
            ),
        ]

    def __init__(self, *args, **kwargs):
        initial_secret = kwargs.pop("secret", None)
        super().__init__(*args, **kwargs)
        self._initial_secret = initial_secret
        self.key_switched_until = None  # set by save(): see _switch_key_kind

    def __str__(self) -> str:
        return self.url

    def save(self, *args, **kwargs) -> None:
        self.full_clean(exclude=["created_at", "updated_at"])
        self.headers, hidden = self._sealed_headers
        self.encrypted_headers = secret_box.encrypt(json.dumps(hidden)) if hidden else ""
        creating = self._state.adding
        handshake = self._prepare_verification(creating)
        loaded_rate = (None, None) if creating else getattr(self, "_loaded_rate", None)
        rate_changed = loaded_rate != (self.rate_limit, self.rate_limit_period)
        if rate_changed:
            self.reset_rate_adaptation()
        with transaction.atomic():
            super().save(*args, **kwargs)
            self._loaded_url = self.url
            if handshake:
                transaction.on_commit(
                    lambda: signals.verification_requested.send(sender=Endpoint, endpoint=self), robust=True
                )
            if creating:
                self.secrets.create(secret=self._initial_secret or generate_secret(self.signature_scheme))
                self._initial_secret = None
            else:
                self.key_switched_until = self._switch_key_kind()
            if rate_changed:
                rate_limits.sync_slots(self, previous_period=loaded_rate[1] if loaded_rate else None)
                self._loaded_rate = (self.rate_limit, self.rate_limit_period)

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        # To see in save() whether the URL changed (re-pointing needs a new handshake).
        instance._loaded_url = instance.__dict__.get("url")
        # To see in save() whether the rate limit changed (its slots follow: rate_limits.sync_slots).
        instance._loaded_rate = (instance.__dict__.get("rate_limit"), instance.__dict__.get("rate_limit_period"))
        return instance

    def _switch_key_kind(self):
        """After signature_scheme moved between shared secrets and ed25519: rotate in a key of the
        kind it signs with now. The older keys keep signing for KEY_SWITCH_GRACE (in the Standard
        Webhooks header, `v1` and `v1a` entries side by side), so a receiver can switch without
        losing a webhook. Returns until when they sign, or None when the newest key already fits."""
        newest_public_key = self.secrets.live().values_list("public_key", flat=True).first()
        wants_key_pair = self.signature_scheme == SignatureScheme.STANDARD_ED25519
        if newest_public_key is None or bool(newest_public_key) == wants_key_pair:
            return None
        self.rotate_secret(grace=KEY_SWITCH_GRACE)
        return timezone.now() + KEY_SWITCH_GRACE

    def clean_fields(self, exclude=None) -> None:
        """Django's own checks let a JSON or blank text field through when it is None (the
        database then refuses it) and crash on values json cannot write (huge integers, deep nesting): those
        become ValidationErrors here."""
        exclude = set(exclude or ())
        errors: dict[str, list[ValidationError]] = {}
        for name in ("tenant", "description", "disabled_reason", *SIGNATURE_SETTINGS):
            # blank=True lets Django skip None for these NOT NULL text fields.
            if name not in exclude and getattr(self, name) is None:
                errors[name] = [ValidationError("This field cannot be null; use an empty string.", code="null")]
        for name in ("event_types", "headers", "sensitive_headers"):
            value = getattr(self, name)
            if name in exclude:
                continue
            if value is None:
                errors[name] = [ValidationError("This field cannot be null.", code="null")]
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError, RecursionError):
                errors[name] = [ValidationError("Value must be plain JSON of a sensible size.", code="invalid")]
        try:
            super().clean_fields(exclude=exclude | errors.keys())
        except ValidationError as exc:
            errors = exc.update_error_dict(errors)
        if errors:
            raise ValidationError(errors)

    def clean(self) -> None:
        if self._initial_secret is not None:
            validate_secret(self._initial_secret, self.signature_scheme)
        headers, sensitive = self.headers, self.sensitive_headers
        signature = {name: getattr(self, name) for name in SIGNATURE_SETTINGS}
        errors = signature_settings_errors(
            self.signature_scheme, signature, headers if isinstance(headers, dict) else {}
        )
        errors.update(rate_limits.rate_limit_errors(self.rate_limit, self.rate_limit_period))
        if isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values()):
            names = sensitive if isinstance(sensitive, list) and all(isinstance(n, str) for n in sensitive) else []
            try:
                self._sealed_headers = custom_headers.seal(headers, names, self._hidden_header_values())
            except ValidationError as exc:
                errors["headers"] = exc.error_list
        if errors:
            raise ValidationError(errors)

    def _hidden_header_values(self) -> dict[str, str]:
        """The stored values of the sensitive custom headers (decrypted once per token)."""
        token = self.encrypted_headers
        if not token:
            return {}
        cached = getattr(self, "_hidden_plain", None)
        if cached is None or cached[0] != token:
            cached = (token, json.loads(secret_box.decrypt(token, f"the custom headers of endpoint {self.pk}")))
            self._hidden_plain = cached
        return cached[1]

    def request_headers(self) -> dict[str, str]:
        """The custom headers as sent, sensitive values decrypted. Only the transport reads
        this; everything shown to people uses `headers`, where those values are hidden."""
        return custom_headers.reveal(self.headers or {}, self._hidden_header_values())

    def receives(self, event_type: str) -> bool:
        """Whether this endpoint subscribes to `event_type`."""
        return self.subscriptions().match(event_type)

    def subscriptions(self) -> PatternSet:
        """This endpoint's patterns compiled for matching (cached per process by patterns)."""
        return compiled_patterns(self.event_types)

    def live_secrets(self) -> list[str]:
        """Secrets that sign right now, newest first."""
        return [s.secret for s in self.secrets.live()]

    @property
    def secret(self) -> str | None:
        """The current (newest) signing secret (`whsk_...` private key for standard_ed25519)."""
        newest = self.secrets.live().first()
        return newest.secret if newest else None

    @property
    def public_key(self) -> str | None:
        """The public key (`whpk_...`) of the current (newest) key when it is an ed25519 key pair:
        what the receiver verifies with. None for a shared secret. Not secret: show it freely."""
        return self.secrets.live().values_list("public_key", flat=True).first() or None

    def public_keys(self) -> list[str]:
        """The public keys of every live ed25519 key, newest first (several during a rotation)."""
        return list(self.secrets.live().exclude(public_key="").values_list("public_key", flat=True))

    def rotate_secret(self, grace: timedelta = timedelta(hours=24), new_secret: str | None = None) -> str:
        """Add a new signing secret (or key pair, for standard_ed25519: the private key is returned,
        `public_key` then gives what the receiver needs); older live secrets keep signing for
        `grace`, then expire."""
        new_secret = new_secret or generate_secret(self.signature_scheme)
        validate_secret(new_secret, self.signature_scheme)
        now = timezone.now()
        with transaction.atomic():
            self.secrets.live(now).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now + grace)).update(
                expires_at=now + grace
            )
            self.secrets.create(secret=new_secret)
        return new_secret

    def set_client_certificate(self, certificate_pem: str, private_key_pem: str) -> "EndpointClientCertificate":
        """Present this certificate (PEM chain, leaf first) and its unencrypted private key
        (PEM) to the receiver as a TLS client certificate (mTLS); replaces any previous one.
        The key is stored encrypted like a secret. Raises ValidationError if they do not fit."""
        with transaction.atomic():
            EndpointClientCertificate.objects.filter(endpoint=self).delete()
            return EndpointClientCertificate.objects.create(
                endpoint=self, certificate_pem=certificate_pem, private_key_pem=private_key_pem
            )

    def remove_client_certificate(self) -> None:
        """Stop presenting a client certificate."""
        EndpointClientCertificate.objects.filter(endpoint=self).delete()

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
