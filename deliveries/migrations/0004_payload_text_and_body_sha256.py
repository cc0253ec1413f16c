# The payload's text as publish() serialized it (Event.payload_json: sent as the body's `data`,
# byte for byte; see deliveries/publishing.py), and the SHA-256 of the exact body bytes of each
# attempt. Both columns are added without rewriting a table (PostgreSQL 11+ adds a nullable
# column, or one with a constant default, in the catalog only), so this is instant on a table of
# any size. Existing events are filled by 0005.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("deliveries", "0003_operator_permissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="deliveryattempt",
            name="body_sha256",
            field=models.CharField(blank=True, default="", editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="event",
            name="payload_json",
            field=models.TextField(blank=True, editable=False, null=True),
        ),
    ]
