"""Retry arithmetic and classification (pure units; the real retries are in test_failures)."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from django.core.exceptions import ImproperlyConfigured

from deliveries.retry_policy import DEFAULT_SCHEDULE, RetryPolicy, Verdict, parse_retry_after, parse_schedule

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_default_schedule_grows_fivefold_and_spans_about_three_days():
    assert DEFAULT_SCHEDULE[:5] == (5, 25, 125, 625, 3125)
    assert max(DEFAULT_SCHEDULE) == 12 * 3600
    assert 2.5 <= sum(DEFAULT_SCHEDULE) / 86400 <= 3.5


@pytest.mark.parametrize("attempt", range(1, len(DEFAULT_SCHEDULE) + 1))
def test_jitter_never_fires_more_than_20_percent_early_or_late(attempt):
    policy = RetryPolicy()
    rng = random.Random(attempt)
    base = DEFAULT_SCHEDULE[attempt - 1]
    delays = [policy.delay_after(attempt, rng=rng) for _ in range(500)]
    assert min(delays) >= base * 0.8
    assert max(delays) <= base * 1.2
    assert len(set(delays)) > 1  # jitter spreads a thundering herd


def test_no_jitter_gives_the_schedule_exactly():
    policy = RetryPolicy(schedule=(1, 2, 4), jitter=0)
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [1, 2, 4]


def test_exhausted_after_schedule_length_plus_one_attempts():
    policy = RetryPolicy(schedule=(1, 2))
    assert policy.max_attempts == 3
    assert policy.delay_after(2) is not None
    assert policy.delay_after(3) is None


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SUCCEEDED),
        (204, Verdict.SUCCEEDED),
        (299, Verdict.SUCCEEDED),
        (None, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (408, Verdict.RETRY),
        (425, Verdict.RETRY),
        (429, Verdict.RETRY),
        (400, Verdict.FAILED),
        (401, Verdict.FAILED),
        (404, Verdict.FAILED),
        (301, Verdict.FAILED),
        (302, Verdict.FAILED),
        (410, Verdict.GONE),
    ],
)
def test_classification(status, verdict):
    assert RetryPolicy().classify(status) == verdict


def test_retry_all_non_2xx_retries_4xx_and_3xx_but_410_still_disables():
    policy = RetryPolicy(retry_all_non_2xx=True)
    assert policy.classify(400) == Verdict.RETRY
    assert policy.classify(302) == Verdict.RETRY
    assert policy.classify(410) == Verdict.GONE


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=90), usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_retry_after_lengthens_a_wait_but_never_shortens_it_and_is_capped():
    policy = RetryPolicy(schedule=(10, 10), jitter=0, max_retry_after=3600)
    assert policy.delay_after(1, retry_after=60) == 60
    assert policy.delay_after(1, retry_after=1) == 10
    assert policy.delay_after(1, retry_after=10**9) == 3600


def test_schedule_setting_parses_and_rejects_bad_values():
    assert parse_schedule("1, 2.5,10") == (1, 2.5, 10)
    for bad in ("1,a", "0,1", "-1", "inf", "nan"):
        with pytest.raises(ImproperlyConfigured):
            parse_schedule(bad)


def test_policy_reads_settings_at_call_time(settings):
    settings.WEBHOOKS_RETRY_SCHEDULE = "1,2,3"
    settings.WEBHOOKS_RETRY_JITTER = 0
    assert RetryPolicy.from_settings().schedule == (1, 2, 3)
    settings.WEBHOOKS_RETRY_SCHEDULE = ""
    assert RetryPolicy.from_settings().schedule == DEFAULT_SCHEDULE
