# Endpoint verification (the CloudEvents webhook handshake, deliveries/verification.py): its
# state, last outcome and next time, and the operators' permission to verify or waive it.
# Existing endpoints get "not_required": they keep receiving as before.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('endpoints', '0008_signing_keys'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='endpoint',
            options={'permissions': [('rotate_secret', 'Can rotate endpoint signing secrets'), ('enable_disable_endpoint', 'Can enable and disable endpoints'), ('send_test_event', 'Can send test events to endpoints'), ('verify_endpoint', 'Can verify endpoints or waive their verification')]},
        ),
        migrations.AddField(
            model_name='endpoint',
            name='verification_attempts',
            field=models.PositiveIntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='verification_due_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='When the next handshake is due (unverified only).', null=True),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='verification_error',
            field=models.CharField(blank=True, default='', editable=False, max_length=500),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='verification_status',
            field=models.CharField(choices=[('not_required', 'Not required'), ('unverified', 'Unverified'), ('verified', 'Verified'), ('waived', 'Waived by an operator')], default='not_required', help_text='unverified: deliveries wait until the URL answers the handshake.', max_length=12),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='verified_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name='endpoint',
            index=models.Index(condition=models.Q(('verification_status', 'unverified')), fields=['verification_due_at'], name='endpoint_unverified'),
        ),
    ]
