# Ed25519 signing keys (Standard Webhooks `v1a`): the scheme `standard_ed25519`, and the public
# key of each key pair kept in the clear next to its encrypted private key. Existing secrets are
# all shared secrets (`whsec_`), whose public_key stays empty: nothing to fill in.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("endpoints", "0007_signature_formats"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpointsecret",
            name="public_key",
            field=models.CharField(
                blank=True,
                default="",
                editable=False,
                help_text="For an ed25519 key: its public key (whpk_...), which receivers verify with; empty for a "
                "shared secret.",
                max_length=60,
            ),
        ),
        migrations.AlterField(
            model_name="endpoint",
            name="signature_scheme",
            field=models.CharField(
                choices=[
                    ("standard", "Standard Webhooks (webhook-signature)"),
                    ("timestamped_hex", "Stripe-compatible (X-Webhook-Signature: t=..,v1=..)"),
                    ("body_hmac", "HMAC of the body (GitHub-, Shopify-style; no signed timestamp)"),
                    ("standard_ed25519", "Standard Webhooks, ed25519 key pair (webhook-signature: v1a,..)"),
                ],
                default="standard",
                error_messages={
                    "invalid_choice": "Signature scheme %(value)r is not a valid choice; use one of: standard, "
                    "timestamped_hex, body_hmac, standard_ed25519."
                },
                max_length=20,
            ),
        ),
    ]
