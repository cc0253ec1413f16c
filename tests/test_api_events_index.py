"""events/ at volume: the page query, with and without `?after=`, is a range scan of the index on
(tenant, created_at, id) (migration 0007) in the page's order, so it reads about a page of rows
at any depth of the list: no sort of the tenant's events, no filtering of the rows before the
cursor. Shown with PostgreSQL's own plans of the queries the API really ran."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deliveries.models import Event
from tests.api_helpers import API, client_for

pytestmark = pytest.mark.django_db(transaction=True)

INDEX = "event_tenant_created"
TENANTS = ("acme", "globex", "initech")
EVENTS_PER_TENANT = 2000
PAGE = 50


@pytest.fixture
def many_events() -> None:
    """EVENTS_PER_TENANT events of each tenant, their created_at spread over hours with ties of
    three (bulk writes share a timestamp), then ANALYZE so the planner knows the table."""
    Event.objects.bulk_create(
        (
            Event(tenant=tenant, type="order.paid", payload={"n": n}, payload_json=json.dumps({"n": n}))
            for n in range(EVENTS_PER_TENANT)
            for tenant in TENANTS
        ),
        batch_size=1000,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE deliveries_event AS e SET created_at = now() - (s.n / 3) * interval '1 second' "
            "FROM (SELECT id, row_number() OVER (ORDER BY random()) AS n FROM deliveries_event) AS s "
            "WHERE s.id = e.id"
        )
        cursor.execute("ANALYZE deliveries_event")


def page_query(route: str) -> tuple[dict, str]:
    """GET `route` as an acme user: its answer, and the SQL of the query that read the page."""
    with CaptureQueriesContext(connection) as queries:
        response = client_for("acme-alice").get(API + route)
    assert response.status_code == 200, response.content
    [sql] = [
        q["sql"] for q in queries.captured_queries if 'FROM "deliveries_event"' in q["sql"] and "LIMIT 51" in q["sql"]
    ]
    return response.json(), sql


def plan_nodes(sql: str) -> list[dict]:
    """Every node of PostgreSQL's plan of `sql` (run, so the row counts are real)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
        [[document]] = cursor.fetchall()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    nodes, stack = [], [plan]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def assert_reads_a_page_from_the_index(sql: str) -> dict:
    nodes = plan_nodes(sql)
    types = [node["Node Type"] for node in nodes]
    assert not [t for t in types if "Sort" in t], types
    assert "Seq Scan" not in types and "Bitmap Heap Scan" not in types, types
    [scan] = [node for node in nodes if node.get("Index Name") == INDEX]
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
    # about a page of rows read, not the tenant's EVENTS_PER_TENANT
    assert scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) <= PAGE + 1 + 3, scan
    return scan


def expected_order() -> list[str]:
    rows = Event.objects.filter(tenant="acme").values_list("created_at", "id")
    return [f"evt_{pk.hex}" for _, pk in sorted(rows)]


def test_the_first_page_is_an_index_range_scan_in_order(many_events):
    body, sql = page_query(f"events/?limit={PAGE}")

    assert [event["id"] for event in body["data"]] == expected_order()[:PAGE]
    scan = assert_reads_a_page_from_the_index(sql)
    assert "tenant" in scan["Index Cond"]


def test_a_page_after_a_cursor_starts_the_scan_at_the_cursor(many_events):
    # Given a cursor deep in the list, in a group of events sharing its created_at
    order = expected_order()
    cursor = order[EVENTS_PER_TENANT // 2]

    body, sql = page_query(f"events/?after={cursor}&limit={PAGE}")

    # Then the page is exactly the next events, ties broken by id, read from the cursor on
    assert [event["id"] for event in body["data"]] == order[EVENTS_PER_TENANT // 2 + 1 :][:PAGE]
    scan = assert_reads_a_page_from_the_index(sql)
    assert "tenant" in scan["Index Cond"] and "created_at >=" in scan["Index Cond"], scan["Index Cond"]


def test_paging_through_ties_with_after_gives_every_event_once_in_order(many_events):
    order = expected_order()
    seen, route = [], f"events/?limit={PAGE * 4}"
    while route:
        body = client_for("acme-alice").get(API + route).json()
        seen += [event["id"] for event in body["data"]]
        route = body["next"] and body["next"].split(API, 1)[1]
    assert seen == order
