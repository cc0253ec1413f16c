"""Retention: old finished deliveries, their attempts, orphaned events and expired secrets go;
pending work and everything recent stays."""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries import publish, retention
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.retention import RetentionReport, purge_old_deliveries, retention_task
from endpoints.models import Endpoint, EndpointSecret

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def retention_settings(settings):
    settings.WEBHOOKS_RETENTION_SUCCEEDED_DAYS = 30
    settings.WEBHOOKS_RETENTION_FAILED_DAYS = 90
    settings.WEBHOOKS_RETENTION_BATCH_SIZE = 1000
    return settings


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint.objects.create(url="https://example.com/hook")


@pytest.fixture
def make_delivery(endpoint):
    """A delivery of a new event, finished `age` ago (its `updated_at`), with `attempts` attempts."""

    def make(status: str, age: timedelta, attempts: int = 1, event: Event | None = None) -> Delivery:
        now = timezone.now()
        if event is None:
            event = Event.objects.create(type="order.paid", payload={}, fanned_out_at=now)
            Event.objects.filter(pk=event.pk).update(created_at=now - age)
        target = endpoint if not event.deliveries.filter(endpoint=endpoint).exists() else _another_endpoint()
        delivery = Delivery.objects.create(event=event, endpoint=target, status=status, attempt_count=attempts)
        DeliveryAttempt.objects.bulk_create(
            DeliveryAttempt(delivery=delivery, number=n, started_at=now - age, duration_ms=5, response_status=200)
            for n in range(1, attempts + 1)
        )
        Delivery.objects.filter(pk=delivery.pk).update(updated_at=now - age)  # auto_now applies on save() only
        return delivery

    return make


def _another_endpoint() -> Endpoint:
    return Endpoint.objects.create(url="https://example.org/hook")


def _exists(delivery: Delivery) -> bool:
    return Delivery.objects.filter(pk=delivery.pk).exists()


def test_succeeded_delivery_older_than_its_period_is_deleted_and_a_recent_one_kept(make_delivery):
    old = make_delivery(DeliveryStatus.SUCCEEDED, 31 * DAY)
    recent = make_delivery(DeliveryStatus.SUCCEEDED, 29 * DAY)

    report = purge_old_deliveries()

    assert not _exists(old)
    assert _exists(recent)
    assert report.succeeded_deliveries == 1


def test_failed_delivery_is_kept_until_its_longer_period_then_deleted(make_delivery):
    # Given a failed delivery (the dead letter) finished 31 days ago
    failed = make_delivery(DeliveryStatus.FAILED, 31 * DAY)

    # When retention runs now, it stays: operators have 90 days to retry it
    assert purge_old_deliveries().failed_deliveries == 0
    assert _exists(failed)

    # When it runs 60 days later, it goes
    report = purge_old_deliveries(now=timezone.now() + 60 * DAY)
    assert report.failed_deliveries == 1
    assert not _exists(failed)


def test_cancelled_delivery_is_kept_and_purged_like_a_failed_one(make_delivery):
    # Given a delivery an operator cancelled 31 days ago
    cancelled = make_delivery(DeliveryStatus.CANCELLED, 31 * DAY, attempts=2)

    # When retention runs now, it stays (it can still be retried), as a failed one would
    assert purge_old_deliveries() == RetentionReport()
    assert _exists(cancelled)

    # When it runs after the failed deliveries' period, it goes with its attempts
    later = timezone.now() + 60 * DAY
    assert purge_old_deliveries(report_only=True, now=later).cancelled_deliveries == 1
    report = purge_old_deliveries(now=later)
    assert (report.cancelled_deliveries, report.attempts) == (1, 2)
    assert not _exists(cancelled)


def test_pending_delivery_is_never_deleted_however_old(make_delivery):
    pending = make_delivery(DeliveryStatus.PENDING, 3650 * DAY)

    report = purge_old_deliveries()

    assert _exists(pending)
    assert report == RetentionReport()


def test_attempts_of_deleted_deliveries_go_and_the_others_stay(make_delivery):
    old = make_delivery(DeliveryStatus.SUCCEEDED, 40 * DAY, attempts=3)
    recent = make_delivery(DeliveryStatus.SUCCEEDED, 1 * DAY, attempts=2)
    pending = make_delivery(DeliveryStatus.PENDING, 400 * DAY, attempts=4)

    report = purge_old_deliveries()

    assert report.attempts == 3
    assert not DeliveryAttempt.objects.filter(delivery_id=old.pk).exists()
    assert DeliveryAttempt.objects.filter(delivery=recent).count() == 2
    assert DeliveryAttempt.objects.filter(delivery=pending).count() == 4


def _mixed_history(make_delivery, endpoint) -> None:
    make_delivery(DeliveryStatus.SUCCEEDED, 31 * DAY, attempts=2)
    make_delivery(DeliveryStatus.SUCCEEDED, 5 * DAY)
    make_delivery(DeliveryStatus.FAILED, 91 * DAY, attempts=5)
    make_delivery(DeliveryStatus.FAILED, 45 * DAY, attempts=5)
    make_delivery(DeliveryStatus.PENDING, 200 * DAY, attempts=3)
    # An old event whose deliveries all go in this run: it goes too.
    shared = make_delivery(DeliveryStatus.SUCCEEDED, 100 * DAY).event
    make_delivery(DeliveryStatus.FAILED, 95 * DAY, event=shared)
    secret = EndpointSecret.objects.get(endpoint=endpoint)
    endpoint.rotate_secret(grace=timedelta(0))
    EndpointSecret.objects.filter(pk=secret.pk).update(expires_at=timezone.now() - DAY)


def test_report_only_deletes_nothing(make_delivery, endpoint):
    _mixed_history(make_delivery, endpoint)
    before = (Delivery.objects.count(), DeliveryAttempt.objects.count(), Event.objects.count())
    secrets = EndpointSecret.objects.count()

    report = purge_old_deliveries(report_only=True)

    assert report.report_only
    assert report.succeeded_deliveries > 0
    assert (Delivery.objects.count(), DeliveryAttempt.objects.count(), Event.objects.count()) == before
    assert EndpointSecret.objects.count() == secrets


def test_report_only_counts_exactly_what_a_real_run_then_deletes(make_delivery, endpoint):
    # Given a mixed history
    _mixed_history(make_delivery, endpoint)
    now = timezone.now()

    # When retention reports, then really runs, at the same instant
    counted = purge_old_deliveries(report_only=True, now=now)
    deleted = purge_old_deliveries(now=now)

    # Then the report said exactly what went
    assert counted == RetentionReport(
        succeeded_deliveries=2, failed_deliveries=2, attempts=9, events=2, expired_secrets=1, report_only=True
    )
    assert deleted == RetentionReport(
        succeeded_deliveries=2, failed_deliveries=2, attempts=9, events=2, expired_secrets=1, report_only=False
    )


def test_batches_delete_every_old_delivery_with_a_bounded_number_of_queries_per_batch(
    make_delivery, retention_settings
):
    # Given 7 old deliveries with many attempts each, and batches of 2
    retention_settings.WEBHOOKS_RETENTION_BATCH_SIZE = 2
    for _ in range(7):
        make_delivery(DeliveryStatus.SUCCEEDED, 100 * DAY, attempts=5)

    # When retention runs
    with CaptureQueriesContext(connection) as queries:
        report = purge_old_deliveries()

    # Then everything old is gone ...
    assert report.succeeded_deliveries == 7
    assert report.attempts == 35
    assert report.events == 7
    assert not Delivery.objects.exists()
    assert not DeliveryAttempt.objects.exists()
    # ... in 4 DELETEs of at most 2 deliveries, each with a constant handful of statements:
    # the count depends on the number of batches, not on the rows (or attempts) in them.
    sql = [query["sql"] for query in queries.captured_queries]
    delivery_deletes = [s for s in sql if s.startswith('DELETE FROM "deliveries_delivery"')]
    assert len(delivery_deletes) == 4
    # Delivery batches (4 + 1 empty for failed) and event batches (4): at most 8 statements each
    # (savepoints included); secrets: one empty batch.
    batches = 4 + 1 + 4 + 1
    assert len(sql) <= 8 * batches
    # No statement reads whole delivery or attempt rows into memory.
    assert not [s for s in sql if s.startswith("SELECT") and '"deliveries_delivery"."last_error"' in s]
    assert not [s for s in sql if s.startswith("SELECT") and '"deliveries_deliveryattempt"."response_body"' in s]


def test_query_count_per_run_does_not_grow_with_attempts_per_delivery(make_delivery, retention_settings):
    retention_settings.WEBHOOKS_RETENTION_BATCH_SIZE = 2

    def queries_to_purge(attempts: int) -> int:
        for _ in range(4):
            make_delivery(DeliveryStatus.SUCCEEDED, 60 * DAY, attempts=attempts)
        with CaptureQueriesContext(connection) as queries:
            assert purge_old_deliveries().succeeded_deliveries == 4
        return len(queries)

    assert queries_to_purge(attempts=1) == queries_to_purge(attempts=20)


@pytest.mark.django_db(transaction=True)
def test_a_run_interrupted_mid_way_keeps_its_committed_batches_and_the_next_run_finishes(
    make_delivery, retention_settings, monkeypatch
):
    # Given 5 old deliveries and batches of 2
    retention_settings.WEBHOOKS_RETENTION_BATCH_SIZE = 2
    for _ in range(5):
        make_delivery(DeliveryStatus.SUCCEEDED, 60 * DAY, attempts=2)

    # When the run dies while taking its second batch (worker killed, time limit)
    take_batch = retention._take_batch
    calls = iter(range(100))

    def dies_on_second_batch(queryset, batch_size):
        if next(calls) == 1:
            raise SystemExit("worker killed")
        return take_batch(queryset, batch_size)

    monkeypatch.setattr(retention, "_take_batch", dies_on_second_batch)
    with pytest.raises(SystemExit):
        purge_old_deliveries()

    # Then the first batch stays deleted, with its attempts, and nothing is half-deleted
    assert Delivery.objects.count() == 3
    assert DeliveryAttempt.objects.count() == 6

    # And the next run deletes the rest
    monkeypatch.setattr(retention, "_take_batch", take_batch)
    assert purge_old_deliveries().succeeded_deliveries == 3
    assert not Delivery.objects.exists()


def test_old_event_without_deliveries_is_deleted_and_events_with_remaining_deliveries_kept(make_delivery):
    now = timezone.now()
    # An old event that matched no endpoint, a recent one, and one never fanned out
    orphan = Event.objects.create(type="order.paid", payload={}, fanned_out_at=now)
    recent = Event.objects.create(type="order.paid", payload={}, fanned_out_at=now)
    not_fanned_out = Event.objects.create(type="order.paid", payload={})
    Event.objects.filter(pk__in=[orphan.pk, not_fanned_out.pk]).update(created_at=now - 100 * DAY)
    Event.objects.filter(pk=recent.pk).update(created_at=now - 60 * DAY)
    # Old events still holding deliveries: a pending one, a failed one within its period
    with_pending = make_delivery(DeliveryStatus.PENDING, 120 * DAY).event
    with_failed = make_delivery(DeliveryStatus.FAILED, 80 * DAY).event
    Event.objects.filter(pk=with_failed.pk).update(created_at=now - 120 * DAY)

    report = purge_old_deliveries()

    assert report.events == 1
    remaining = set(Event.objects.values_list("pk", flat=True))
    assert orphan.pk not in remaining
    assert {recent.pk, not_fanned_out.pk, with_pending.pk, with_failed.pk} <= remaining


def test_deleting_an_event_frees_its_idempotency_key(make_delivery):
    event = publish("order.paid", {"order": 1}, idempotency_key="order-1-paid")
    Event.objects.filter(pk=event.pk).update(created_at=timezone.now() - 100 * DAY, fanned_out_at=timezone.now())

    purge_old_deliveries()

    again = publish("order.paid", {"order": 1}, idempotency_key="order-1-paid")
    assert again.pk != event.pk


def test_expired_secrets_are_deleted_but_an_endpoint_always_keeps_its_newest_secret(endpoint):
    now = timezone.now()
    # Given a rotated endpoint: its old secret expired yesterday, the new one is live
    first = endpoint.secrets.get()
    newest = endpoint.rotate_secret(grace=timedelta(hours=1))
    EndpointSecret.objects.filter(pk=first.pk).update(expires_at=now - DAY)
    # ... one whose only secret has expired
    lonely = Endpoint.objects.create(url="https://example.net/hook")
    lonely.secrets.update(expires_at=now - DAY)
    # ... and one whose older secret is still within its grace period
    overlapping = Endpoint.objects.create(url="https://example.org/hook")
    overlapping.rotate_secret(grace=timedelta(hours=1))

    report = purge_old_deliveries()

    assert report.expired_secrets == 1
    assert endpoint.live_secrets() == [newest]
    assert not EndpointSecret.objects.filter(pk=first.pk).exists()
    assert lonely.secrets.count() == 1
    assert overlapping.secrets.count() == 2


def test_command_json_output_parses_and_matches_what_was_deleted(make_delivery):
    make_delivery(DeliveryStatus.SUCCEEDED, 31 * DAY, attempts=2)
    make_delivery(DeliveryStatus.FAILED, 91 * DAY, attempts=3)

    out = StringIO()
    call_command("webhooks_retention", "--json", stdout=out)

    assert json.loads(out.getvalue()) == {
        "succeeded_deliveries": 1,
        "failed_deliveries": 1,
        "cancelled_deliveries": 0,
        "attempts": 5,
        "events": 1,  # the 91-day-old one; the 31-day-old event is within the event period
        "expired_secrets": 0,
        "idempotency_keys": 0,
        "ordering_keys": 0,
        "report_only": False,
    }
    assert not Delivery.objects.exists()


def test_command_report_only_prints_a_table_and_deletes_nothing(make_delivery):
    kept = make_delivery(DeliveryStatus.SUCCEEDED, 31 * DAY, attempts=2)

    out = StringIO()
    call_command("webhooks_retention", "--report-only", stdout=out)

    text = out.getvalue()
    assert text.startswith("Would delete")
    assert "Succeeded deliveries" in text
    assert re.search(r"Attempts of those deliveries +2\n", text)
    assert _exists(kept)


def test_task_purges_and_returns_the_counts(make_delivery, caplog):
    make_delivery(DeliveryStatus.SUCCEEDED, 31 * DAY)

    with caplog.at_level("INFO", logger="deliveries.retention"):
        result = retention_task()

    assert result == {
        "succeeded_deliveries": 1,
        "failed_deliveries": 0,
        "cancelled_deliveries": 0,
        "attempts": 1,
        "events": 0,
        "expired_secrets": 0,
        "idempotency_keys": 0,
        "ordering_keys": 0,
        "report_only": False,
    }
    [line] = [r.getMessage() for r in caplog.records if r.name == "deliveries.retention"]
    assert "succeeded_deliveries=1" in line
    assert "attempts=1" in line


def test_task_is_registered_under_its_stable_name():
    assert retention_task.name == "deliveries.retention"


def test_an_idle_ordering_key_without_deliveries_is_forgotten_and_starts_again_at_one(make_delivery):
    from django.db import transaction

    from deliveries import publish
    from deliveries.fanout import fan_out_events
    from deliveries.models import OrderingKey

    endpoint = Endpoint.objects.create(url="https://a.example.com/hook")
    with transaction.atomic():
        event = publish("order.updated", {}, ordering_key="order-7")
        busy = publish("order.updated", {}, ordering_key="order-8")
    fan_out_events([str(event.pk), str(busy.pk)])
    Delivery.objects.filter(event=event).update(status=DeliveryStatus.SUCCEEDED)
    OrderingKey.objects.update(updated_at=timezone.now() - 91 * DAY)

    # order-7's delivery is purged (succeeded, older than 30 days): its key goes with it;
    # order-8 keeps its pending delivery, so its key stays, however old.
    Delivery.objects.filter(event=event).update(updated_at=timezone.now() - 31 * DAY)
    chains = OrderingKey.objects.filter(key="order-7").count()  # one per endpoint
    assert chains >= 1
    assert purge_old_deliveries(report_only=True).ordering_keys == chains
    report = purge_old_deliveries()
    assert report.ordering_keys == chains
    assert set(OrderingKey.objects.values_list("key", flat=True)) == {"order-8"}
    assert purge_old_deliveries().ordering_keys == 0

    # A later event of the forgotten key starts its sequence again
    with transaction.atomic():
        again = publish("order.updated", {}, ordering_key="order-7")
    fan_out_events([str(again.pk)])
    assert Delivery.objects.get(event=again, endpoint=endpoint).sequence == 1
