"""List pages stay fast on big tables: their query count does not grow with the rows, they never
count the attempt table, and their row counts stop at a cap."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deliveries.admin import common, endpoint_admin
from deliveries.endpoint_stats import within_time_limit
from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, OrderingKey
from endpoints.models import Endpoint
from tests.operators import make_delivery, make_staff, waiting_fields

pytestmark = pytest.mark.django_db

STATUSES = (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.PENDING)
ATTEMPT_TABLE = DeliveryAttempt._meta.db_table


def grow_to(deliveries: int, endpoints: int) -> None:
    """Bulk-create events, deliveries (mixed statuses) and one attempt each, up to these totals."""
    for n in range(Endpoint.objects.count(), endpoints):
        Endpoint.objects.create(url=f"https://receiver-{n}.example.com/hook", tenant=f"tenant-{n % 3}")
    targets = list(Endpoint.objects.order_by("pk"))
    now = timezone.now()
    missing = deliveries - Delivery.objects.count()
    events = Event.objects.bulk_create(
        [Event(type="order.paid", payload={"order": n}, fanned_out_at=now) for n in range(missing)], batch_size=2000
    )
    rows = Delivery.objects.bulk_create(
        [
            Delivery(
                event=event,
                endpoint=targets[n % len(targets)],
                status=STATUSES[n % 3],
                attempt_count=1,
                last_status_code=200 if n % 3 == 0 else 500,
            )
            for n, event in enumerate(events)
        ],
        batch_size=2000,
    )
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(
                delivery=row,
                number=1,
                started_at=now,
                duration_ms=10,
                response_status=row.last_status_code,
                outcome="succeeded" if row.status == DeliveryStatus.SUCCEEDED else "retry",
            )
            for row in rows
        ],
        batch_size=2000,
    )
    assert Delivery.objects.count() == deliveries


PAGES = {
    "deliveries": reverse("admin:deliveries_delivery_changelist"),
    "failed deliveries of one tenant": reverse("admin:deliveries_delivery_changelist")
    + "?status__exact=failed&tenant=tenant-1&type=order.*",
    "events": reverse("admin:deliveries_event_changelist"),
    "endpoints": reverse("admin:endpoints_endpoint_changelist"),
    "endpoints by backlog": reverse("admin:endpoints_endpoint_changelist") + "?o=-6",
}


def queries_of(client: Client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200, url
    return [query["sql"] for query in context.captured_queries]


def test_list_pages_make_as_many_queries_with_10000_deliveries_as_with_100():
    # Given a staff operator (not a superuser: permission lookups are part of every page)
    client = Client()
    client.force_login(make_staff("operator"))

    counts = {}
    for deliveries, endpoints in ((100, 2), (10_000, 20)):
        grow_to(deliveries, endpoints)
        for name, url in PAGES.items():
            counts[name, deliveries] = len(queries_of(client, url))

    for name in PAGES:
        assert counts[name, 100] == counts[name, 10_000], (name, counts)


def test_list_pages_never_count_the_attempt_table():
    client = Client()
    client.force_login(make_staff("operator"))
    grow_to(300, 3)

    for name in ("deliveries", "failed deliveries of one tenant", "events"):
        assert not [sql for sql in queries_of(client, PAGES[name]) if ATTEMPT_TABLE in sql], name
    # The endpoints page reads attempts once, for its success rates: only the last 24 hours
    # (the started_at index) of the endpoints on the page.
    [rates] = [sql for sql in queries_of(client, PAGES["endpoints"]) if ATTEMPT_TABLE in sql]
    assert '"started_at" >=' in rates and '"endpoint_id" IN' in rates


def test_the_row_count_stops_at_the_cap(monkeypatch):
    # Given more deliveries than the cap
    monkeypatch.setattr(common, "COUNT_CAP", 50)
    grow_to(120, 1)
    endpoint = Endpoint.objects.create(url="https://receiver.example.com/hook")
    for _ in range(3):
        make_delivery(endpoint)
    client = Client()
    client.force_login(make_staff("operator"))

    # When the list is shown, its count query stops at the cap, and says so
    queries = queries_of(client, PAGES["deliveries"])
    page = client.get(PAGES["deliveries"]).content.decode()

    assert any("COUNT(*)" in sql and "LIMIT 51" in sql for sql in queries)
    assert "50+ deliveries" in page
    assert "Select all 50+ deliveries" in page
    # and a filter that matches fewer rows is counted exactly
    assert (
        "3 deliveries"
        in client.get(PAGES["deliveries"] + f"?endpoint={endpoint.pk}&status__exact=failed").content.decode()
    )


HEAD_STATES = ("retry", "breaker", "due", "rate_limit", "sending")
LOOSE_STATES = ("due", "retry", "rate_limit", "disabled", "unverified", "unrecorded")


def grow_chains(chains: int) -> None:
    """Bulk-create up to `chains` ordering keys over two endpoints, each with a head (in one of
    HEAD_STATES) and a delivery waiting behind it, and beside each key a pending delivery without
    a key (in one of LOOSE_STATES); the newest rows of the list mix them all."""
    endpoints = [Endpoint.objects.get_or_create(url=f"https://ordered-{n}.example.com/hook")[0] for n in range(2)]
    now = timezone.now()
    first = OrderingKey.objects.count()
    added = range(first, chains)
    events = iter(
        Event.objects.bulk_create(
            [Event(type="order.paid", payload={}, fanned_out_at=now) for _ in range(3 * len(added))]
        )
    )
    keys, deliveries = [], []
    for n in added:
        endpoint, key = endpoints[n % 2], f"key-{n}"
        keys.append(OrderingKey(endpoint=endpoint, key=key, last_sequence=2))
        head = waiting_fields(HEAD_STATES[n % len(HEAD_STATES)], now)
        deliveries += [
            Delivery(event=next(events), endpoint=endpoint, ordering_key=key, sequence=1, attempt_count=1,
                     last_error="HTTP 500", **head),
            Delivery(event=next(events), endpoint=endpoint, ordering_key=key, sequence=2,
                     **waiting_fields("ordering", now)),
            Delivery(event=next(events), endpoint=endpoint, **waiting_fields(LOOSE_STATES[n % len(LOOSE_STATES)], now)),
        ]  # fmt: skip
    OrderingKey.objects.bulk_create(keys, batch_size=2000)
    Delivery.objects.bulk_create(deliveries, batch_size=2000)
    assert OrderingKey.objects.count() == chains


WAITING_PAGES = {
    "deliveries": reverse("admin:deliveries_delivery_changelist"),
    "deliveries behind their key": reverse("admin:deliveries_delivery_changelist") + "?waiting=ordering",
    "ordering keys": reverse("admin:deliveries_orderingkey_changelist"),
    "blocked ordering keys": reverse("admin:deliveries_orderingkey_changelist") + "?chain=blocked",
    "endpoints": reverse("admin:endpoints_endpoint_changelist"),
    "events": reverse("admin:deliveries_event_changelist"),
}


def test_waiting_deliveries_and_ordering_keys_make_as_many_queries_with_1000_rows_as_with_10():
    # Given a staff operator, and first 10 then 1,000 ordering keys, each with a head and a
    # delivery behind it (every row of the list says why it waits, with a link to its head)
    client = Client()
    client.force_login(make_staff("operator"))

    counts = {}
    for rows in (10, 1000):
        grow_chains(rows)
        for name, url in WAITING_PAGES.items():
            counts[name, rows] = len(queries_of(client, url))
        page = client.get(WAITING_PAGES["deliveries"]).content.decode()
        assert page.count('class="webhooks-blocking-head"') == min(rows, 100 // 3)  # one per key on the page

    for name in WAITING_PAGES:
        assert counts[name, 10] == counts[name, 1000], (name, counts)


def sleep_in_the_database(seconds: float) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])
    return "done"


def test_a_count_that_takes_too_long_is_cut_off_and_the_page_says_n_a(monkeypatch):
    # The limit applies to the call only
    assert within_time_limit(50, lambda: sleep_in_the_database(1)) is None
    assert within_time_limit(5000, lambda: sleep_in_the_database(0.01)) == "done"
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ("0",)

    # Given success rates that take longer than the endpoints page allows
    monkeypatch.setattr(endpoint_admin, "RATES_TIME_LIMIT_MS", 50)
    monkeypatch.setattr(endpoint_admin, "attempt_rates", lambda ids: sleep_in_the_database(1))
    endpoint = Endpoint.objects.create(url="https://receiver.example.com/hook")
    make_delivery(endpoint)
    client = Client()
    client.force_login(make_staff("operator"))

    # Then the page still comes, with the rest of its figures, and the rate marked n/a
    response = client.get(PAGES["endpoints"])
    page = response.content.decode()
    assert 'title="Too many attempts to count in time; see manage.py webhook_stats">n/a' in page
    assert response.context["cl"].result_list[0].failed_count == 1
