# The events/ list of the customers' API at volume: a tenant's events in keyset order
# (created_at, id). Built CONCURRENTLY on PostgreSQL, so a host with 100M events keeps writing
# while it builds; that cannot run in a transaction, hence atomic = False. A plain index on SQLite.

from django.db import migrations, models

from deliveries.migration_operations import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("deliveries", "0006_api_idempotency_keys"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="event",
            index=models.Index(fields=["tenant", "created_at", "id"], name="event_tenant_created"),
        ),
    ]
