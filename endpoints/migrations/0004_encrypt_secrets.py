# Endpoint secrets encrypted at rest: each plain `secret` is encrypted into `encrypted_secret`
# (Fernet under the first of WEBHOOKS_SECRET_KEYS, see endpoints/secret_box.py), then the plain
# column is dropped. Reversible: going back decrypts into the restored column.

from django.db import migrations, models

BATCH_SIZE = 1000


def encrypt_secrets(apps, schema_editor):
    from endpoints import secret_box

    EndpointSecret = apps.get_model("endpoints", "EndpointSecret")
    rows = EndpointSecret.objects.using(schema_editor.connection.alias).order_by("pk")
    batch = []
    for row in rows.only("pk", "secret").iterator(chunk_size=BATCH_SIZE):
        row.encrypted_secret = secret_box.encrypt(row.secret)
        batch.append(row)
        if len(batch) == BATCH_SIZE:
            EndpointSecret.objects.bulk_update(batch, ["encrypted_secret"])
            batch = []
    EndpointSecret.objects.bulk_update(batch, ["encrypted_secret"])


def decrypt_secrets(apps, schema_editor):
    from endpoints import secret_box

    EndpointSecret = apps.get_model("endpoints", "EndpointSecret")
    rows = EndpointSecret.objects.using(schema_editor.connection.alias).order_by("pk")
    batch = []
    for row in rows.only("pk", "encrypted_secret").iterator(chunk_size=BATCH_SIZE):
        row.secret = secret_box.decrypt(row.encrypted_secret)
        batch.append(row)
        if len(batch) == BATCH_SIZE:
            EndpointSecret.objects.bulk_update(batch, ["secret"])
            batch = []
    EndpointSecret.objects.bulk_update(batch, ["secret"])


class Migration(migrations.Migration):

    dependencies = [
        ("endpoints", "0003_operator_permissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpointsecret",
            name="encrypted_secret",
            field=models.TextField(default="", editable=False),
            preserve_default=False,
        ),
        # A default on the plain column only so that migrating backwards can add it again.
        migrations.AlterField(
            model_name="endpointsecret",
            name="secret",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.RunPython(encrypt_secrets, decrypt_secrets, elidable=False),
        migrations.RemoveField(
            model_name="endpointsecret",
            name="secret",
        ),
    ]
