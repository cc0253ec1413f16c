"""The operator commands: send_test_event, retry_failed, cancel_deliveries, webhook_stats. Real
PostgreSQL, and a real worker and receiver where something is sent."""

import json
from datetime import timedelta
from io import StringIO

import pytest
import standardwebhooks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from deliveries.management.operator_commands import parse_since
from deliveries.management.progress import ProgressBar
from deliveries.models import AttemptTrigger, Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.operations import TEST_EVENT_TYPE
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.operators import VIEW_PERMISSIONS, make_chain, make_delivery, make_staff, make_waiting


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def endpoint(db) -> Endpoint:
    return Endpoint.objects.create(url="https://receiver.example.com/hook", tenant="acme")


# --- send_test_event ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_send_test_event_delivers_a_signed_test_event_and_reports_it(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"), tenant="acme", event_types=["order.*"])

    out, _ = run("send_test_event", str(endpoint.pk), "--wait", "15", "--json")

    [result] = json.loads(out)
    assert result["status"] == "succeeded"
    assert result["last_status_code"] == 200
    [request] = receiver.received("/hook")
    headers = {k.lower(): v for k, v in request.headers.items()}
    body = standardwebhooks.Webhook(endpoint.secret).verify(request.body, headers)
    assert body["type"] == TEST_EVENT_TYPE
    assert body["id"] == result["event"]


@pytest.mark.django_db(transaction=True)
def test_send_test_event_says_in_words_what_came_back(celery_worker, receiver):
    receiver.script("/hook", [(404, {}, b"no such hook")])
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))

    with pytest.raises(CommandError, match="1 of 1 test events did not get through") as raised:
        run("send_test_event", str(endpoint.pk), "--wait", "15")

    assert raised.value.returncode == 1
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_send_test_event_without_wait_only_queues(endpoint):
    out, _ = run("send_test_event", str(endpoint.pk))

    delivery = Delivery.objects.get()
    assert out.strip() == (
        f"endpoint {endpoint.pk} {endpoint.url}: test event {delivery.event.webhook_id} queued as delivery "
        f"{delivery.pk}"
    )
    assert delivery.event.type == TEST_EVENT_TYPE
    assert delivery.event.fanned_out_at is not None  # the sweep will not fan it out to others


@pytest.mark.django_db
def test_send_test_event_refuses_unknown_ids_and_sends_nothing(endpoint):
    with pytest.raises(CommandError, match="no endpoint with id 999"):
        run("send_test_event", str(endpoint.pk), "999")
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_send_test_event_refuses_a_disabled_endpoint(endpoint):
    endpoint.disable("customer left")
    other = Endpoint.objects.create(url="https://other.example.com/hook")

    with pytest.raises(CommandError) as raised:
        run("send_test_event", str(endpoint.pk), str(other.pk), "--json")

    assert raised.value.returncode == 1
    assert list(Delivery.objects.values_list("endpoint_id", flat=True)) == [other.pk]


@pytest.mark.django_db
def test_send_test_event_as_a_user_without_the_permission_is_refused(endpoint):
    make_staff("viewer", VIEW_PERMISSIONS)
    make_staff("operator")

    with pytest.raises(CommandError, match=r"lacks the permission endpoints\.send_test_event"):
        run("send_test_event", str(endpoint.pk), "--as-user", "viewer")
    with pytest.raises(CommandError, match="no active user 'nobody'"):
        run("send_test_event", str(endpoint.pk), "--as-user", "nobody")
    assert not Delivery.objects.exists()

    run("send_test_event", str(endpoint.pk), "--as-user", "operator")
    assert Delivery.objects.count() == 1


# --- retry_failed --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_retry_failed_dry_run_counts_per_endpoint_and_changes_nothing(endpoint):
    other = Endpoint.objects.create(url="https://other.example.com/hook")
    for _ in range(3):
        make_delivery(endpoint)
    make_delivery(other)
    make_delivery(other, DeliveryStatus.SUCCEEDED)

    out, _ = run("retry_failed", "--all", "--dry-run", "--json")
    text, _ = run("retry_failed", "--all", "--dry-run")

    report = json.loads(out)
    assert report["dry_run"] is True
    assert report["would_retry"] == 4
    assert [(row["endpoint"], row["failed"]) for row in report["by_endpoint"]] == [(endpoint.pk, 3), (other.pk, 1)]
    assert text.startswith("Would retry 4 failed deliveries (dry run: nothing changed).")
    assert Delivery.objects.filter(status=DeliveryStatus.FAILED).count() == 4


@pytest.mark.django_db
def test_retry_failed_takes_the_endpoint_and_since_filters(endpoint):
    now = timezone.now()
    recent = make_delivery(endpoint, finished_at=now - timedelta(hours=1))
    early = make_delivery(endpoint, finished_at=now - timedelta(hours=5))
    elsewhere = make_delivery(Endpoint.objects.create(url="https://other.example.com/hook"))

    out, _ = run("retry_failed", "--endpoint", str(endpoint.pk), "--since", "2h", "--json")

    report = json.loads(out)
    assert report["queued"] == 1 and report["skipped"] == {}
    assert report["endpoints"] == [endpoint.pk]
    assert Delivery.objects.get(pk=recent.pk).status == DeliveryStatus.PENDING
    assert Delivery.objects.get(pk=early.pk).status == DeliveryStatus.FAILED
    assert Delivery.objects.get(pk=elsewhere.pk).status == DeliveryStatus.FAILED


@pytest.mark.django_db(transaction=True)
def test_retry_failed_sends_them_as_manual_attempts(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    deliveries = [make_delivery(endpoint) for _ in range(3)]

    out, _ = run("retry_failed", "--endpoint", str(endpoint.pk))

    assert out.strip() == "3 deliveries queued."
    receiver.wait_for(3)
    wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 3)
    assert set(DeliveryAttempt.objects.filter(number=2).values_list("trigger", flat=True)) == {AttemptTrigger.MANUAL}
    assert {r.headers["webhook-id"] for r in receiver.received()} == {d.event.webhook_id for d in deliveries}


@pytest.mark.django_db
def test_retry_failed_shows_a_progress_bar_on_stderr(endpoint):
    for _ in range(3):
        make_delivery(endpoint)

    out, err = run("retry_failed", "--all", "--progress")

    assert out.strip() == "3 deliveries queued."
    assert "retrying  [" in err and "3/3" in err and "100%" in err


@pytest.mark.django_db
def test_retry_failed_needs_a_filter_and_an_existing_endpoint(endpoint):
    make_delivery(endpoint)

    with pytest.raises(CommandError, match="--endpoint ID, --since WHEN, or --all"):
        run("retry_failed")
    with pytest.raises(CommandError, match="no endpoint with id 999"):
        run("retry_failed", "--endpoint", "999")
    with pytest.raises(CommandError, match="cannot read the time 'yesterday'"):
        run("retry_failed", "--since", "yesterday")
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_retry_failed_as_a_user_without_the_permission_is_refused(endpoint):
    make_delivery(endpoint)
    make_staff("viewer", VIEW_PERMISSIONS)

    with pytest.raises(CommandError, match=r"lacks the permission deliveries\.retry_delivery"):
        run("retry_failed", "--all", "--as-user", "viewer")
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_retry_failed_leaves_disabled_endpoints_and_says_so(endpoint):
    make_delivery(endpoint)
    endpoint.disable("customer left")

    out, _ = run("retry_failed", "--all")

    assert out.strip() == "0 deliveries queued; skipped 1 endpoint disabled (enable it first)."


# --- cancel_deliveries ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_deliveries_cancels_pending_ones_and_the_next_of_their_key_goes(endpoint):
    head, behind = make_chain(endpoint, "order-7", 2)
    succeeded = make_delivery(endpoint, DeliveryStatus.SUCCEEDED)

    out, _ = run("cancel_deliveries", str(head.pk), str(succeeded.pk), "999999", "--json")

    assert json.loads(out) == {
        "cancelled": 1,
        "cancelled_ids": [head.pk],
        "skipped": {"already succeeded or cancelled": 1, "no longer exists": 1},
    }
    assert Delivery.objects.get(pk=head.pk).status == DeliveryStatus.CANCELLED
    behind.refresh_from_db()
    assert (behind.parked_reason, behind.next_attempt_at is not None) == ("", True)  # due now
    make_staff("viewer", VIEW_PERMISSIONS)
    with pytest.raises(CommandError, match=r"lacks the permission deliveries\.cancel_delivery"):
        run("cancel_deliveries", str(behind.pk), "--as-user", "viewer")
    assert run("cancel_deliveries", str(behind.pk))[0] == "1 delivery cancelled.\n"


# --- webhook_stats -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_webhook_stats_lists_rates_and_backlog_worst_first(endpoint):
    # Given one endpoint with 1 of 3 attempts today successful, and a healthy one
    make_delivery(endpoint, DeliveryStatus.SUCCEEDED)
    make_delivery(endpoint)
    make_delivery(endpoint, DeliveryStatus.PENDING)  # its attempt failed; due now
    healthy = Endpoint.objects.create(url="https://healthy.example.com/hook", tenant="globex")
    make_delivery(healthy, DeliveryStatus.SUCCEEDED)

    report = json.loads(run("webhook_stats", "--json")[0])
    table, _ = run("webhook_stats")

    rows = report["endpoints"]
    assert [row["id"] for row in rows] == [endpoint.pk, healthy.pk]
    worst = rows[0]
    assert worst["attempts_24h"] == 3
    assert worst["success_rate_24h"] == pytest.approx(1 / 3, abs=1e-4)
    assert (worst["pending"], worst["due_now"], worst["failed"]) == (1, 1, 1)
    assert worst["state"] == "active" and worst["last_success_at"]
    assert report["totals"] == {
        "endpoints": 2,
        "pending": 1,
        "due_now": 1,
        "parked": {"breaker": 0, "ordering": 0, "disabled": 0, "unverified": 0, "unrecorded": 0},
        "failed": 1,
        "oldest_due_seconds": pytest.approx(report["totals"]["oldest_due_seconds"]),
    }
    lines = table.splitlines()
    assert lines[0].split() == [
        "ID", "STATE", "TENANT", "URL", "SUCCESS", "24H", "ATTEMPTS", "LAST", "SUCCESS",
        "PENDING", "DUE", "RETRY", "RATE", "LIMITED", "PARKED", "FAILED",
    ]  # fmt: skip
    assert "33.3 %" in lines[1] and endpoint.url in lines[1]
    assert lines[-1].startswith("2 endpoints; 1 pending (1 due now, the oldest due for")


@pytest.mark.django_db
def test_webhook_stats_filters_by_tenant_and_state(endpoint):
    disabled = Endpoint.objects.create(url="https://off.example.com/hook", tenant="acme")
    disabled.disable("410 Gone")
    Endpoint.objects.create(url="https://globex.example.com/hook", tenant="globex")

    def ids(*args) -> list[int]:
        return [row["id"] for row in json.loads(run("webhook_stats", "--json", *args)[0])["endpoints"]]

    assert sorted(ids("--tenant", "acme")) == sorted([endpoint.pk, disabled.pk])
    assert ids("--state", "disabled") == [disabled.pk]
    make_staff("nobody-in-particular", ())
    with pytest.raises(CommandError, match="lacks the permission"):
        run("webhook_stats", "--as-user", "nobody-in-particular")
    make_staff("viewer", VIEW_PERMISSIONS)
    assert len(ids("--as-user", "viewer")) == 3


@pytest.mark.django_db
def test_webhook_stats_says_why_deliveries_wait_per_endpoint_and_which_head_holds_each_key(endpoint):
    # Given an endpoint with deliveries waiting for a retry, the rate limit, its breaker, and
    # two keys held up by their heads; and another endpoint with one disabled delivery
    for state in ("retry", "rate_limit", "breaker", "breaker", "due"):
        make_waiting(endpoint, state)
    head, *_ = make_chain(endpoint, "order-7", 3)
    other_head, _ = make_chain(endpoint, "order-8", 2, head_waiting="breaker")
    other = Endpoint.objects.create(url="https://other.example.com/hook", tenant="acme")
    make_waiting(other, "unrecorded")

    report = json.loads(run("webhook_stats", "--json", "--keys", "5")[0])
    table, _ = run("webhook_stats", "--keys", "5")

    rows = {row["id"]: row for row in report["endpoints"]}
    assert rows[endpoint.pk]["waiting"] == {"due": 1, "sending": 0, "retry": 2, "rate_limit": 1}
    assert rows[endpoint.pk]["parked"] == {"breaker": 3, "ordering": 3, "disabled": 0, "unverified": 0, "unrecorded": 0}
    assert rows[endpoint.pk]["pending"] == 10 and rows[endpoint.pk]["due_now"] == 1
    assert rows[endpoint.pk]["rate_limit"] is None
    assert rows[other.pk]["parked"]["unrecorded"] == 1
    assert report["totals"]["parked"] == {"breaker": 3, "ordering": 3, "disabled": 0, "unverified": 0, "unrecorded": 1}
    assert [(k["key"], k["waiting_behind"], k["head"]["id"], k["head"]["waiting"]) for k in report["blocked_keys"]] == [
        ("order-7", 2, head.pk, "retry"),
        ("order-8", 1, other_head.pk, "breaker"),
    ]
    assert report["blocked_keys"][0]["head"]["last_error"] == "HTTP 500"
    # The table: a line under each endpoint with parked deliveries, the totals, the keys
    lines = table.splitlines()
    row = lines.index(next(line for line in lines if endpoint.url in line))
    assert lines[row].split()[-6:] == ["10", "1", "2", "1", "6", "0"]  # pending, due, retry, rate, parked, failed
    assert lines[row + 1].strip() == "parked: 3 circuit breaker, 3 behind their ordering key"
    assert "11 pending (1 due now, the oldest due for" in table
    assert "; 7 parked (3 circuit breaker, 3 behind their ordering key, 1 no reason recorded); 0 failed" in table
    [order_7] = [line for line in lines if "order-7" in line]
    assert order_7.split() == [
        str(endpoint.pk),
        "order-7",
        "2",
        str(head.pk),
        "1",
        "retry",
        "schedule",
        "1",
        "HTTP",
        "500",
    ]


# --- shared parts --------------------------------------------------------------------------------


def test_parse_since_reads_relative_and_absolute_times(settings):
    settings.TIME_ZONE = "UTC"
    now = timezone.now()
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("2020-05-01T09:30", now).isoformat() == "2020-05-01T09:30:00+00:00"
    assert parse_since("2020-05-01", now).isoformat() == "2020-05-01T00:00:00+00:00"
    assert parse_since("2020-05-01T09:30+02:00", now).isoformat() == "2020-05-01T09:30:00+02:00"
    with pytest.raises(CommandError, match="in the future"):
        parse_since("2999-01-01", now)


def test_progress_bar_draws_only_when_enabled():
    shown, hidden = StringIO(), StringIO()
    with ProgressBar(200, "retrying", stream=shown, enabled=True) as bar:
        bar.update(100, force=True)
        bar.update(200)
    with ProgressBar(200, "retrying", stream=hidden) as bar:  # StringIO is no terminal
        bar.update(200)

    assert "retrying  [###############...............]  100/200   50%" in shown.getvalue()
    assert shown.getvalue().endswith("\n") and "200/200  100%" in shown.getvalue()
    assert hidden.getvalue() == ""
