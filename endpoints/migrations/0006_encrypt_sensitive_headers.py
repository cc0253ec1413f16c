# Sensitive custom header values encrypted at rest: for each endpoint, the values of its
# sensitive headers (listed in sensitive_headers, or named like a credential; see
# endpoints/custom_headers.py) move into `encrypted_headers` (a secret_box token of a JSON
# object) and `headers` keeps their names with "[hidden]" as the value. Reversible: going back
# puts the decrypted values into `headers` again.

import json

import endpoints.validation
from django.db import migrations, models

BATCH_SIZE = 500


def _rewrite(apps, schema_editor, rewrite):
    Endpoint = apps.get_model("endpoints", "Endpoint")
    rows = Endpoint.objects.using(schema_editor.connection.alias).order_by("pk")
    batch = []
    for row in rows.only("pk", "headers", "sensitive_headers", "encrypted_headers").iterator(chunk_size=BATCH_SIZE):
        if rewrite(row):
            batch.append(row)
        if len(batch) == BATCH_SIZE:
            Endpoint.objects.bulk_update(batch, ["headers", "encrypted_headers"])
            batch = []
    Endpoint.objects.bulk_update(batch, ["headers", "encrypted_headers"])


def encrypt_sensitive_headers(apps, schema_editor):
    from endpoints import custom_headers, secret_box

    def rewrite(row):
        headers = row.headers if isinstance(row.headers, dict) else {}
        sensitive = row.sensitive_headers if isinstance(row.sensitive_headers, list) else []
        hidden = {
            name: value
            for name, value in headers.items()
            if isinstance(value, str) and custom_headers.is_sensitive_header(name, sensitive)
        }
        if not hidden:
            return False
        row.headers = {name: custom_headers.HIDDEN if name in hidden else value for name, value in headers.items()}
        row.encrypted_headers = secret_box.encrypt(json.dumps(hidden))
        return True

    _rewrite(apps, schema_editor, rewrite)


def decrypt_sensitive_headers(apps, schema_editor):
    from endpoints import custom_headers, secret_box

    def rewrite(row):
        if not row.encrypted_headers:
            return False
        hidden = json.loads(secret_box.decrypt(row.encrypted_headers, f"the custom headers of endpoint {row.pk}"))
        row.headers = custom_headers.reveal(row.headers, hidden)
        row.encrypted_headers = ""
        return True

    _rewrite(apps, schema_editor, rewrite)


class Migration(migrations.Migration):

    dependencies = [
        ("endpoints", "0005_sensitive_headers_client_certificate"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="encrypted_headers",
            field=models.TextField(blank=True, default="", editable=False),
        ),
        migrations.AlterField(
            model_name='endpoint',
            name='headers',
            field=models.JSONField(blank=True, default=dict, help_text='Extra request headers. Values of sensitive headers are stored encrypted and shown as [hidden]: leave [hidden] to keep a value, write a new value to replace it.', validators=[endpoints.validation.validate_custom_headers]),
        ),
        migrations.AlterField(
            model_name='endpoint',
            name='sensitive_headers',
            field=models.JSONField(blank=True, default=list, help_text="Names of custom headers holding credentials, e.g. ['Authorization']: their values are stored encrypted, never shown and never recorded (names with auth, token, secret, key, ... are treated so anyway).", validators=[endpoints.validation.validate_sensitive_header_names]),
        ),
        migrations.RunPython(encrypt_sensitive_headers, decrypt_sensitive_headers, elidable=False),
    ]
