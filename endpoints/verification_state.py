"""An endpoint's verification state (the handshake itself is deliveries/verification.py).

VerificationStatus says whether an endpoint must answer the CloudEvents webhook handshake
before it receives; VerificationMixin gives Endpoint what it needs of that when it is saved
(re-pointing starts over) and `require_verification()`, the entry point of the customers' API.
"""

from django.db import models, transaction
from django.utils import timezone

from . import signals
from .app_settings import webhook_settings

__all__ = ["VerificationMixin", "VerificationStatus"]


class VerificationStatus(models.TextChoices):
    """Whether an endpoint must answer the handshake (deliveries/verification.py) before it
    receives events. Only `unverified` holds deliveries back."""

    NOT_REQUIRED = "not_required", "Not required"
    UNVERIFIED = "unverified", "Unverified"
    VERIFIED = "verified", "Verified"
    WAIVED = "waived", "Waived by an operator"


class VerificationMixin:
    """Endpoint's verification behaviour; the fields live on Endpoint."""

    def _prepare_verification(self, creating: bool) -> bool:
        """Before a save: an endpoint created unverified, or re-pointed while under verification,
        starts the handshake from the beginning. Returns whether one is to run at commit."""
        if self.verification_status == VerificationStatus.NOT_REQUIRED:
            return False
        if not creating:
            stored_url = getattr(self, "_loaded_url", None)
            if stored_url is None:
                stored_url = type(self)._default_manager.filter(pk=self.pk).values_list("url", flat=True).first()
            if stored_url == self.url:
                return False
        elif self.verification_status != VerificationStatus.UNVERIFIED:
            return False  # created verified or waived: the caller says so
        self._mark_unverified()
        return True

    def _mark_unverified(self) -> None:
        self.verification_status = VerificationStatus.UNVERIFIED
        self.verified_at = None
        self.verification_due_at = timezone.now()
        self.verification_attempts = 0
        self.verification_error = ""

    @property
    def awaits_verification(self) -> bool:
        """Whether deliveries to this endpoint wait for the handshake."""
        return self.verification_status == VerificationStatus.UNVERIFIED

    def require_verification(self) -> bool:
        """Hold this endpoint's deliveries until its URL answers the handshake, if
        WEBHOOKS_VERIFY_API_ENDPOINTS is on (the default); returns whether it is now under
        verification. The customers' API calls it after creating an endpoint and after changing
        one's URL. Idempotent: an endpoint already under verification (unverified, verified or
        waived for its current URL) is left as it is. The handshake runs when the transaction
        commits."""
        if not webhook_settings.VERIFY_API_ENDPOINTS:
            return False
        if self.verification_status != VerificationStatus.NOT_REQUIRED:
            return True
        self._mark_unverified()
        fields = ("verification_status", "verified_at", "verification_due_at", "verification_attempts")
        type(self)._default_manager.filter(pk=self.pk).update(
            **{name: getattr(self, name) for name in fields}, verification_error="", updated_at=timezone.now()
        )
        transaction.on_commit(
            lambda: signals.verification_requested.send(sender=type(self), endpoint=self), robust=True
        )
        return True
