# Fill Event.payload_json of the events written before 0004, from their jsonb value: that is all
# there is of them now, so their text is what render_body sent for them until now (keys in
# jsonb's order, numbers as jsonb gives them back), and they keep being sent exactly as before.
#
# Best effort, and safe to skip or interrupt: render_body sends an event whose text is null
# exactly as it would be filled here. So:
# - it runs outside one big transaction (atomic = False), a batch per transaction, in primary-key
#   order from where it is: interrupted, `migrate` starts it again and it fills the rest;
# - rows written meanwhile by processes still running the old code stay null, and are sent right;
# - on a very large events table (tens of millions of rows: the fill rewrites each row once, in
#   Python), an operator may skip it with `manage.py migrate deliveries 0005 --fake`; retention
#   deletes the unfilled rows in time, and nothing a receiver gets changes.
# Reversing it does nothing: reversing 0004 drops the column.

import json

from django.db import migrations, transaction

BATCH_ROWS = 1000
# bulk_update writes one statement per batch with every text in it: a batch also stops at this
# many bytes of text (a payload may be 256 kB; 1,000 of them would make a 256 MB statement), and
# rows are read 100 at a time, so a batch of large payloads never sits in memory whole.
BATCH_BYTES = 8 * 1024 * 1024
READ_CHUNK = 100


def fill_payload_text(apps, schema_editor):
    Event = apps.get_model("deliveries", "Event")
    events = Event.objects.using(schema_editor.connection.alias)
    after = None
    while True:
        pending = events.filter(payload_json__isnull=True).order_by("pk").only("pk", "payload")
        if after is not None:
            pending = pending.filter(pk__gt=after)
        batch, size = [], 0
        for event in pending[:BATCH_ROWS].iterator(chunk_size=READ_CHUNK):
            # Exactly as render_body serialized `payload` before this column existed.
            event.payload_json = json.dumps(event.payload, ensure_ascii=False, separators=(",", ":"))
            batch.append(event)
            size += len(event.payload_json)
            if size >= BATCH_BYTES:
                break
        if not batch:
            return
        with transaction.atomic(using=schema_editor.connection.alias):
            events.bulk_update(batch, ["payload_json"])
        after = batch[-1].pk


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("deliveries", "0004_payload_text_and_body_sha256"),
    ]

    operations = [
        migrations.RunPython(fill_payload_text, migrations.RunPython.noop, elidable=False),
    ]
