# Signature formats per endpoint (issue 13): the body_hmac scheme, and the signature header
# name, encoding and prefix. Existing endpoints get blanks: their format's defaults, unchanged.

import endpoints.signature_formats
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('endpoints', '0006_encrypt_sensitive_headers'),
    ]

    operations = [
        migrations.AddField(
            model_name='endpoint',
            name='signature_encoding',
            field=models.CharField(blank=True, choices=[('hex', 'hex (lowercase)'), ('base64', 'base64')], default='', error_messages={'invalid_choice': 'Signature encoding %(value)r is not a valid choice; use hex or base64 (blank: hex).'}, help_text='body_hmac only: how the HMAC is written; blank: hex.', max_length=10),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='signature_header',
            field=models.CharField(blank=True, default='', help_text="timestamped_hex and body_hmac: the signature header's name; blank: X-Webhook-Signature.", max_length=100, validators=[endpoints.signature_formats.validate_signature_header]),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='signature_prefix',
            field=models.CharField(blank=True, default='', help_text='body_hmac only: text before the HMAC, e.g. sha256= as GitHub sends it.', max_length=32, validators=[endpoints.signature_formats.validate_signature_prefix]),
        ),
        migrations.AlterField(
            model_name='endpoint',
            name='signature_scheme',
            field=models.CharField(choices=[('standard', 'Standard Webhooks (webhook-signature)'), ('timestamped_hex', 'Stripe-compatible (X-Webhook-Signature: t=..,v1=..)'), ('body_hmac', 'HMAC of the body (GitHub-, Shopify-style; no signed timestamp)')], default='standard', error_messages={'invalid_choice': 'Signature scheme %(value)r is not a valid choice; use one of: standard, timestamped_hex, body_hmac.'}, max_length=20),
        ),
    ]
