"""The questions some actions ask before they run, and the endpoint form."""

from datetime import timedelta

from django import forms
from django.utils import timezone

from endpoints.models import Endpoint
from endpoints.signature_formats import SIGNATURE_PRESETS

MAX_GRACE_HOURS = 24 * 30


class LocalDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self, attrs=None):
        super().__init__(attrs, format="%Y-%m-%dT%H:%M")


class ReplaySinceForm(forms.Form):
    since = forms.DateTimeField(
        label="Failed since",
        widget=LocalDateTimeInput(),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"],
        help_text="Deliveries whose last attempt failed at or after this time (server time zone) are sent again.",
    )

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("initial", {"since": timezone.localtime() - timedelta(hours=24)})
        super().__init__(*args, **kwargs)

    def clean_since(self):
        since = self.cleaned_data["since"]
        if since > timezone.now():
            raise forms.ValidationError("That time is in the future: nothing can have failed since then.")
        return since


class DisableForm(forms.Form):
    reason = forms.CharField(
        max_length=150,
        help_text="Shown on the endpoint as why it is disabled; its pending deliveries are kept until it is enabled.",
        widget=forms.TextInput(attrs={"size": 60}),
    )


class RotateSecretForm(forms.Form):
    grace_hours = forms.IntegerField(
        label="Grace period (hours)",
        initial=24,
        min_value=0,
        max_value=MAX_GRACE_HOURS,
        help_text="The current secrets keep signing this long next to the new one, so receivers can switch "
        "without losing a webhook. 0 stops them at once.",
    )


class EndpointForm(forms.ModelForm):
    """The endpoint form, with a signature preset: choosing one sets the four signature fields
    when the form is saved (no JavaScript), overriding what they hold."""

    signature_preset = forms.ChoiceField(
        label="Signature preset",
        required=False,
        choices=[("", "None: use the fields below"), *((name, p.label) for name, p in SIGNATURE_PRESETS.items())],
        help_text="Sets the signature scheme, header, encoding and prefix the way those receivers already verify "
        "them, when saved.",
    )

    class Meta:
        model = Endpoint
        fields = (
            "url",
            "tenant",
            "description",
            "event_types",
            "headers",
            "sensitive_headers",
            "signature_scheme",
            "signature_header",
            "signature_encoding",
            "signature_prefix",
            "rate_limit",
            "rate_limit_period",
        )

    def clean(self) -> dict:
        cleaned = super().clean()
        preset = SIGNATURE_PRESETS.get(cleaned.get("signature_preset") or "")
        if preset is not None:
            for field, value in preset.fields().items():
                if field in self.fields:
                    cleaned[field] = value
                    self.errors.pop(field, None)  # what was typed there no longer counts
        return cleaned
