"""schema/ serves a valid OpenAPI 3 document of the customers' API: every route, under the
prefix the host mounted it at, and nothing of the host's other views."""

import pytest
from drf_spectacular.validation import validate_schema

from tests.api_helpers import API, client_for

pytestmark = pytest.mark.django_db

ROUTES = {
    "endpoints/": {"get", "post"},
    "endpoints/{id}/": {"get", "put", "patch", "delete"},
    "endpoints/{id}/rotate-secret/": {"post"},
    "endpoints/{id}/test-event/": {"post"},
    "endpoints/{id}/replay/": {"post"},
    "endpoints/{id}/health/": {"get"},
    "event-types/": {"get"},
    "events/": {"get"},
    "events/{event_id}/": {"get"},
    "deliveries/": {"get"},
    "deliveries/{id}/": {"get"},
    "deliveries/{id}/retry/": {"post"},
    "deliveries/{id}/cancel/": {"post"},
}


def test_the_served_schema_is_valid_openapi_3_and_lists_every_route():
    response = client_for("acme-alice").get(API + "schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    document = response.json()
    validate_schema(document)  # drf-spectacular's check against the OpenAPI 3 JSON Schema
    assert document["openapi"].startswith("3.")
    assert {path: set(ops) - {"parameters"} for path, ops in document["paths"].items()} == {
        API + route: methods for route, methods in ROUTES.items()
    }
    # lists are documented with their cursor and page shape
    events = document["paths"][API + "events/"]["get"]
    assert {p["name"] for p in events["parameters"]} == {"after", "limit", "type", "since", "until"}
    page = document["components"]["schemas"]["PaginatedEventList"]
    assert set(page["properties"]) == {"data", "has_more", "next"}
    # and every operation documents its error answers
    assert set(document["paths"][API + "endpoints/{id}/"]["delete"]["responses"]) == {"204", "401", "403", "404", "409"}
    assert set(document["paths"][API + "events/"]["get"]["responses"]) == {"200", "400", "401", "403"}


def test_the_schema_is_also_served_as_yaml():
    response = client_for("acme-alice").get(API + "schema/", HTTP_ACCEPT="application/vnd.oai.openapi")
    assert response.status_code == 200 and response.content.startswith(b"openapi: 3.")
