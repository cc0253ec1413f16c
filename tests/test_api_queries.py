"""Every list of the customers' API costs the same number of queries per page at 10 rows as at
1,000 (no query per row), with a cursor or without."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, ParkedReason
from endpoints.models import Endpoint
from tests.api_helpers import API, client_for

pytestmark = pytest.mark.django_db

# What the delivery rows cycle through: finished ones, pending ones waiting for each kind of reason,
# and ordered chains (a head waiting for its retry, the next delivery of its key parked behind it),
# so that every page shows `waiting` objects of each kind, blocked_by included.
KINDS = ("succeeded", "failed", "cancelled", "head", "behind", "rate_limit", "breaker")


def delivery_state(kind: str, now) -> dict:
    """The fields of a delivery of `kind`, as deliveries.scheduling and deliveries.ordering leave them."""
    if kind in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED):
        return {"status": kind}
    pending = {"status": DeliveryStatus.PENDING}
    return {
        "head": {**pending, "next_attempt_at": now + timedelta(minutes=5), "ordering_key": "order-7", "sequence": 1},
        "behind": {**pending, "parked_reason": ParkedReason.ORDERING, "ordering_key": "order-7", "sequence": 2},
        "rate_limit": {**pending, "next_attempt_at": now + timedelta(seconds=9), "parked_reason": "rate_limit"},
        "breaker": {**pending, "parked_reason": ParkedReason.BREAKER},
    }[kind]


def grow_to(rows: int, tenant: str = "acme") -> None:
    """Bulk-create endpoints, events and deliveries (each with an attempt) of `tenant` up to `rows`
    each; each "behind" delivery goes to the endpoint of the head before it."""
    have = Endpoint.objects.filter(tenant=tenant).count()
    now = timezone.now()
    endpoints = Endpoint.objects.bulk_create(
        [
            Endpoint(
                url=f"https://r{n}.example.com/hook",
                tenant=tenant,
                headers={"X-N": str(n)},
                paused_until=now + timedelta(minutes=1) if KINDS[n % len(KINDS)] == "breaker" else None,
            )
            for n in range(have, rows)
        ]
    )
    kinds = [KINDS[n % len(KINDS)] for n in range(have, rows)]
    events = Event.objects.bulk_create(
        [
            Event(
                tenant=tenant,
                type="order.paid",
                payload={"n": n},
                payload_json=f'{{"n":{n}}}',
                fanned_out_at=now,
                ordering_key="order-7" if kind in ("head", "behind") else None,
            )
            for n, kind in enumerate(kinds)
        ]
    )
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                event=event,
                endpoint=endpoints[n - 1] if kind == "behind" and n else endpoints[n],
                attempt_count=1,
                **delivery_state(kind, now),
            )
            for n, (event, kind) in enumerate(zip(events, kinds, strict=True))
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
    urls += [f"{API}deliveries/?limit=500&status=pending", f"{API}deliveries/?limit=500&waiting=ordering"]
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
    # and the deliveries' pages showed every kind of wait, with the head each "behind" one waits for
    page = client.get(API + "deliveries/?limit=500&status=pending").json()["data"]
    reasons = {d["waiting"]["reason"] for d in page}
    assert reasons == {"retry", "ordering", "rate_limit", "breaker"}, reasons
    behind = [d for d in page if d["waiting"]["reason"] == "ordering"]
    heads = Delivery.objects.in_bulk([d["waiting"]["blocked_by"] for d in behind])
    assert len(heads) == len(behind) > 100
    assert all(heads[d["waiting"]["blocked_by"]].endpoint_id == d["endpoint_id"] for d in behind)
