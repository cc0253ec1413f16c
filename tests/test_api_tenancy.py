"""The customers' API is scoped to the request's tenant: a tenant never sees, changes or learns
of another's endpoints, events or deliveries; no secret is ever read back; without a tenant
function, or for a request it maps to None, or unauthenticated, every route is refused."""

import json
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from rest_framework.test import APIClient

from deliveries.models import Delivery, DeliveryStatus
from endpoints.models import Endpoint
from tests.api_helpers import API, assert_no_secret, client_for, tenant_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants() -> dict:
    return {"acme": tenant_rows("acme"), "globex": tenant_rows("globex")}


def routes(rows: dict) -> list[tuple[str, str]]:
    """Every route of the API, with the ids of `rows` where a route takes one."""
    endpoint, event, delivery = rows["endpoint"].pk, rows["event"].webhook_id, rows["delivery"].pk
    return [
        ("get", "endpoints/"),
        ("post", "endpoints/"),
        ("get", f"endpoints/{endpoint}/"),
        ("patch", f"endpoints/{endpoint}/"),
        ("put", f"endpoints/{endpoint}/"),
        ("delete", f"endpoints/{endpoint}/"),
        ("post", f"endpoints/{endpoint}/rotate-secret/"),
        ("post", f"endpoints/{endpoint}/test-event/"),
        ("post", f"endpoints/{endpoint}/replay/"),
        ("get", f"endpoints/{endpoint}/health/"),
        ("get", "event-types/"),
        ("get", "events/"),
        ("get", f"events/{event}/"),
        ("get", "deliveries/"),
        ("get", f"deliveries/{delivery}/"),
        ("post", f"deliveries/{delivery}/retry/"),
        ("post", f"deliveries/{delivery}/cancel/"),
        ("get", "schema/"),
    ]


def object_routes(rows: dict) -> list[tuple[str, str, dict | None]]:
    """The routes naming one object of `rows`, with a body that would be valid."""
    endpoint, event, delivery = rows["endpoint"].pk, rows["event"].webhook_id, rows["delivery"].pk
    return [
        ("get", f"endpoints/{endpoint}/", None),
        ("patch", f"endpoints/{endpoint}/", {"description": "taken over"}),
        ("put", f"endpoints/{endpoint}/", {"url": "https://evil.example.com/hook"}),
        ("delete", f"endpoints/{endpoint}/", None),
        ("post", f"endpoints/{endpoint}/rotate-secret/", {"grace_seconds": 0}),
        ("post", f"endpoints/{endpoint}/test-event/", None),
        ("post", f"endpoints/{endpoint}/replay/", {"since": "2020-01-01T00:00:00Z"}),
        ("get", f"endpoints/{endpoint}/health/", None),
        ("get", f"events/{event}/", None),
        ("get", f"deliveries/{delivery}/", None),
        ("post", f"deliveries/{delivery}/retry/", None),
        ("post", f"deliveries/{delivery}/cancel/", None),
    ]


def call(client, method: str, route: str, body: dict | None = None):
    return getattr(client, method)(API + route, body, format="json")


def test_another_tenants_objects_answer_404_as_unknown_ids_do_and_stay_unchanged(two_tenants):
    globex = client_for("globex-bob")
    acme = two_tenants["acme"]
    endpoint_before = Endpoint.objects.values().get(pk=acme["endpoint"].pk)
    delivery_before = Delivery.objects.values().get(pk=acme["delivery"].pk)
    secrets_before = list(acme["endpoint"].secrets.values_list("pk", "expires_at"))
    for method, route, body in object_routes(acme):
        response = call(globex, method, route, body)
        assert response.status_code == 404, (method, route, response.status_code, response.content)
        # the same answer as for an id that exists nowhere: nothing tells the two apart
        unknown = route.replace(str(acme["endpoint"].pk), "987654").replace(str(acme["delivery"].pk), "987654")
        unknown = unknown.replace(acme["event"].webhook_id, f"evt_{uuid.uuid4().hex}")
        other = call(globex, method, unknown, body)
        assert other.status_code == 404
        assert set(json.loads(response.content)) == set(json.loads(other.content)) == {"detail"}
    assert Endpoint.objects.values().get(pk=acme["endpoint"].pk) == endpoint_before
    assert list(acme["endpoint"].secrets.values_list("pk", "expires_at")) == secrets_before
    assert Delivery.objects.get(pk=acme["delivery"].pk).status == DeliveryStatus.FAILED
    assert Delivery.objects.values().get(pk=acme["delivery"].pk) == delivery_before  # not retried, not cancelled
    assert not LogEntry.objects.exists()


def test_lists_show_only_the_tenants_own_objects(two_tenants):
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    client = client_for("globex-bob")
    assert [e["id"] for e in call(client, "get", "endpoints/").json()["data"]] == [globex["endpoint"].pk]
    assert [e["id"] for e in call(client, "get", "events/").json()["data"]] == [globex["event"].webhook_id]
    assert [d["id"] for d in call(client, "get", "deliveries/").json()["data"]] == [globex["delivery"].pk]
    # filtering by another tenant's ids finds nothing (and says nothing about them)
    assert call(client, "get", f"deliveries/?endpoint={acme['endpoint'].pk}").json()["data"] == []
    assert call(client, "get", f"deliveries/?event={acme['event'].webhook_id}").json()["data"] == []
    # a cursor of another tenant is refused exactly as an id that exists nowhere
    theirs = call(client, "get", f"events/?after={acme['event'].webhook_id}")
    made_up = call(client, "get", f"events/?after=evt_{uuid.uuid4().hex}")
    assert theirs.status_code == made_up.status_code == 400
    assert theirs.json()["after"][0].startswith("No object with id")


def test_an_endpoint_created_through_the_api_belongs_to_the_requests_tenant_whatever_the_input():
    response = call(
        client_for("acme-alice"), "post", "endpoints/", {"url": "https://acme.example.com/new", "tenant": "globex"}
    )
    assert response.status_code == 201, response.content
    assert Endpoint.objects.get(pk=response.json()["id"]).tenant == "acme"
    assert call(client_for("globex-bob"), "get", "endpoints/").json()["data"] == []


def test_no_get_or_list_response_holds_a_secret(two_tenants):
    ed25519 = Endpoint.objects.create(
        url="https://acme.example.com/ed", tenant="acme", signature_scheme="standard_ed25519"
    )
    client = client_for("acme-alice")
    rows = two_tenants["acme"]
    gets = [route for method, route in routes(rows) if method == "get"] + [f"endpoints/{ed25519.pk}/"]
    for route in gets:
        response = call(client, "get", route)
        assert response.status_code == 200, (route, response.content)
        assert_no_secret(response)
    # the sensitive custom header's value is hidden; the plain one is shown
    shown = call(client, "get", f"endpoints/{rows['endpoint'].pk}/").json()
    assert shown["headers"] == {"Authorization": "[hidden]", "X-Shop": "acme"}
    assert b"acme-token" not in call(client, "get", "endpoints/").content
    # ed25519: the public key is shown (receivers verify with it), the private key never
    assert call(client, "get", f"endpoints/{ed25519.pk}/").json()["public_key"].startswith("whpk_")


def test_without_the_tenant_function_every_route_is_refused_with_a_clear_message(two_tenants, settings):
    del settings.WEBHOOKS_API_TENANT
    client = client_for("acme-alice")
    for method, route in routes(two_tenants["acme"]):
        response = call(client, method, route)
        assert response.status_code == 403, (method, route, response.status_code)
        assert "WEBHOOKS_API_TENANT is not configured" in response.json()["detail"]
    assert Endpoint.objects.count() == 2


def test_a_request_the_tenant_function_maps_to_none_is_refused(two_tenants):
    client = client_for("nobody")
    for method, route in routes(two_tenants["acme"]):
        response = call(client, method, route)
        assert response.status_code == 403, (method, route)
        assert "no webhooks tenant" in response.json()["detail"]


def test_an_unauthenticated_request_is_refused(two_tenants):
    for method, route in routes(two_tenants["acme"]):
        response = call(APIClient(), method, route)
        assert response.status_code in (401, 403), (method, route)
        assert "credentials were not provided" in response.json()["detail"]
    assert Endpoint.objects.count() == 2


def test_the_hosts_drf_settings_other_than_authentication_do_not_change_the_api(two_tenants, settings):
    settings.REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
        "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
        "PAGE_SIZE": 1,
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.BrowsableAPIRenderer"],
        "DEFAULT_SCHEMA_CLASS": "rest_framework.schemas.openapi.AutoSchema",
        "DEFAULT_FILTER_BACKENDS": ["rest_framework.filters.OrderingFilter"],
    }
    client = client_for("acme-alice")  # not staff: IsAdminUser would refuse it
    listed = call(client, "get", "events/?ordering=-created_at")
    assert listed.status_code == 200 and listed["Content-Type"] == "application/json"
    assert set(listed.json()) == {"data", "has_more", "next"}
    assert call(client, "get", "schema/").status_code == 200
    # authentication is the host's: a client the host's classes do not accept is refused
    settings.REST_FRAMEWORK = {"DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"]}
    assert call(client, "get", "events/").status_code == 401
