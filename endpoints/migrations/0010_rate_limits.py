# Per-endpoint rate limits (endpoints/rate_limits.py): the two fields, both empty on existing
# endpoints (no limit), and the slots a limited endpoint's requests take.

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('endpoints', '0009_endpoint_verification'),
    ]

    operations = [
        migrations.AddField(
            model_name='endpoint',
            name='rate_limit',
            field=models.PositiveIntegerField(blank=True, help_text='Requests per period at most.', null=True, validators=[django.core.validators.MinValueValidator(1, 'A rate limit allows at least 1 request per period; leave it empty for no limit.'), django.core.validators.MaxValueValidator(10000, 'A rate limit allows at most 10000 requests per period; leave it empty for no limit.')]),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='rate_limit_period',
            field=models.PositiveIntegerField(blank=True, help_text='In seconds.', null=True, validators=[django.core.validators.MinValueValidator(1, 'The rate limit period is at least 1 second.'), django.core.validators.MaxValueValidator(86400, 'The rate limit period is at most 86400 seconds.')]),
        ),
        migrations.CreateModel(
            name='RateLimitSlot',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('free_at', models.DateTimeField()),
                ('endpoint', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='rate_limit_slots', to='endpoints.endpoint')),
            ],
            options={
                'indexes': [models.Index(fields=['endpoint', 'free_at'], name='rate_limit_slot_free')],
                'constraints': [models.UniqueConstraint(fields=('endpoint', 'number'), name='rate_limit_slot_number')],
            },
        ),
    ]
