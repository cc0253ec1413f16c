# Adaptive rate limits (endpoints/rate_adaptation.py): the effective limit after 429 answers and
# the times that move it; empty on existing endpoints (their configured limit holds).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('endpoints', '0010_rate_limits'),
    ]

    operations = [
        migrations.AddField(
            model_name='endpoint',
            name='rate_limit_calm_since',
            field=models.DateTimeField(blank=True, editable=False, help_text='Requests made without a 429 since then (a step up each period).', null=True),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='rate_limit_current',
            field=models.PositiveIntegerField(blank=True, editable=False, help_text='Effective rate limit after 429 answers; empty: the limit.', null=True),
        ),
        migrations.AddField(
            model_name='endpoint',
            name='rate_limit_lowered_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='When a 429 last lowered the effective rate limit.', null=True),
        ),
    ]
