# The open (pending or failed) deliveries of one endpoint's ordering key, in sequence (deliveries.ordering). Built
# CONCURRENTLY on PostgreSQL so that a deliveries table of 100M rows keeps taking writes meanwhile
# (hence atomic = False); a plain index on SQLite.

from django.db import migrations, models

from deliveries.migration_operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("deliveries", "0008_delivery_scheduling"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("ordering_key__isnull", False), ("status__in", ["pending", "failed"])),
                fields=["endpoint", "ordering_key", "sequence"],
                name="delivery_ordering_open",
            ),
        ),
    ]
