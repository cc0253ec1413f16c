"""Ed25519 key pairs in the endpoint admin (signature scheme `standard_ed25519`).

The private key (`whsk_`) never appears on any page; the public key (`whpk_`) is what the
receiver verifies with, and it is not secret, so it is shown wherever the keys are listed and
on the page that follows a new key. Switching an endpoint between a shared-secret scheme and
`standard_ed25519` rotates in a key of the new kind (Endpoint.save), so it needs the permission
to rotate secrets, and it ends on the new-secrets page like a rotation.
"""

from django import forms
from django.contrib import messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from endpoints.models import Endpoint

from ..permissions import switches_key_kind
from . import new_secrets


class SigningKeysAdminMixin:
    """For EndpointAdmin: guards and follows a switch of key kind."""

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None or self.has_rotate_secret_permission(request):
            return form

        class KeyKindKeptForm(form):
            def clean(self):
                # Checked after the form's own clean(), which applies a signature preset: the scheme
                # a preset chooses must pass here too.
                cleaned = super().clean()
                scheme = cleaned.get("signature_scheme")
                # self.instance still holds the stored scheme here (construct_instance comes after).
                if scheme and switches_key_kind(self.instance.signature_scheme, scheme):
                    self.add_error(
                        "signature_scheme",
                        forms.ValidationError(
                            "Switching between a shared secret and an ed25519 key pair rotates the endpoint's "
                            "signing key: that needs the permission to rotate signing secrets."
                        ),
                    )
                return cleaned

        return KeyKindKeptForm

    def response_change(self, request: HttpRequest, obj: Endpoint):
        """After a switch of key kind, show the new key (its public key, for ed25519) once."""
        if obj.key_switched_until is None or IS_POPUP_VAR in request.POST:
            return super().response_change(request, obj)
        self.message_user(
            request,
            f"Endpoint {obj.pk} now signs with a new {'ed25519 key pair' if obj.public_key else 'shared secret'}; "
            "its previous keys keep signing until the time below.",
            messages.SUCCESS,
        )
        new_secrets.remember(request, [new_secrets.reveal_entry(obj, old_until=obj.key_switched_until)])
        return HttpResponseRedirect(reverse("admin:endpoints_endpoint_new_secrets"))
