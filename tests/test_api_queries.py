"""Every list of the customers' API costs the same number of queries per page at 10 rows as at
1,000 (no query per row), with a cursor or without."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from endpoints.models import Endpoint
from tests.api_helpers import API, client_for

pytestmark = pytest.mark.django_db

STATUSES = list(DeliveryStatus)


def grow_to(rows: int, tenant: str = "acme") -> None:
    """Bulk-create endpoints, events and deliveries (each with an attempt) of `tenant` up to `rows` each."""
    have = Endpoint.objects.filter(tenant=tenant).count()
    endpoints = Endpoint.objects.bulk_create(
        [
            Endpoint(url=f"https://r{n}.example.com/hook", tenant=tenant, headers={"X-N": str(n)})
            for n in range(have, rows)
        ]
    )
    now = timezone.now()
    events = Event.objects.bulk_create(
        [
            Event(tenant=tenant, type="order.paid", payload={"n": n}, payload_json=f'{{"n":{n}}}', fanned_out_at=now)
            for n in range(len(endpoints))
        ]
    )
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(event=event, endpoint=endpoint, status=STATUSES[n % 3], attempt_count=1)
            for n, (event, endpoint) in enumerate(zip(events, endpoints, strict=True))
        ]
    )
    DeliveryAttempt.objects.bulk_create(
        [DeliveryAttempt(delivery=d, number=1, started_at=now, duration_ms=5, response_status=500) for d in deliveries]
    )


def query_count(client, url: str) -> tuple[int, int]:
    """(queries, rows shown) of one GET."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries), len(response.json()["data"])


def list_urls(client) -> list[str]:
    """Each list, on a first page, and on a page after a cursor (the second object)."""
    urls = []
    for route in ("endpoints/", "events/", "deliveries/"):
        second = client.get(API + route + "?limit=2").json()["data"][1]["id"]
        urls += [f"{API}{route}?limit=500", f"{API}{route}?limit=500&after={second}"]
    urls += [f"{API}deliveries/?limit=500&status=failed", f"{API}events/?limit=500&type=order.paid"]
    return urls


def test_list_pages_cost_the_same_queries_at_10_and_at_1000_rows(settings):
    settings.WEBHOOKS_EVENT_TYPES = {f"type.n{n}": {"description": str(n)} for n in range(50)}
    client = client_for("acme-alice")
    grow_to(10)
    grow_to(10, tenant="globex")
    small = {url: query_count(client, url) for url in [*list_urls(client), API + "event-types/"]}
    grow_to(1000)
    large = {url: query_count(client, url) for url in [*list_urls(client), API + "event-types/"]}
    for url, (queries, shown) in small.items():
        assert large[url][0] == queries, (url, small[url], large[url])
        if "event-types" not in url:
            assert large[url][1] > shown, url
    # the page really grew, up to its limit
    assert large[f"{API}events/?limit=500"][1] == 500
