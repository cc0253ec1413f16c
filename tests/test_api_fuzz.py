"""Schemathesis over the served schema: every operation of the customers' API, fed generated
requests through Django's WSGI app in-process, never answers 5xx and every answer matches the
schema (status code documented, body valid against its response schema).

The schema is loaded from the `schema/` route as a customer would; requests authenticate as a
tenant user by HTTP Basic (DRF's default authentication, the test settings' fast hasher). Rows of
two tenants exist; path parameters are drawn both at random and from the caller's own ids (the
other tenant's ids must only ever answer 404, which the tenancy tests assert). Bounded and
derandomized so the run is repeatable.
"""

import base64
import re
from datetime import timedelta

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from endpoints.models import Endpoint
from tests.api_helpers import API, tenant_rows
from tests.operators import make_chain, make_waiting

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 80
PASSWORD = "fuzz-password"

pytestmark = pytest.mark.django_db(transaction=True)


def basic_auth(username: str) -> dict:
    """The Authorization header of `username` (created with PASSWORD if missing)."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(PASSWORD)
    user.save()
    token = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def own_path_parameters(operation, rows: dict) -> dict:
    """The caller's own id for the path parameter of `operation` (the object its route names)."""
    names = [parameter.name for parameter in operation.path_parameters]
    if not names:
        return {}
    kind = operation.path.removeprefix(API).split("/")[0]
    own = {
        "endpoints": rows["endpoint"].pk,
        "deliveries": rows["delivery"].pk,
        "events": rows["event"].webhook_id,
    }[kind]
    return {names[0]: own}


def fuzz_operation(operation, headers: dict, own_ids: dict) -> int:
    """Run generated cases of `operation` with CHECKS; the number of cases run."""
    # Invalid bodies and query strings (negative mode) go to a route that exists: an invalid path
    # parameter (-1) matches no route of the host, whose 404 page is not the API's.
    negative = operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=own_ids or None)
    strategy = st.one_of(operation.as_strategy(), negative)
    if own_ids:
        strategy = st.one_of(strategy, operation.as_strategy(path_parameters=own_ids))
    ran = []

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        ran.append(case)
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
    return len(ran)


def test_every_operation_answers_within_its_schema():
    # given: rows of two tenants and a user of the first
    rows = tenant_rows("acme")
    tenant_rows("globex")
    headers = basic_auth("acme-fuzz")

    # when: the schema served to that user is loaded and every operation fuzzed
    schema = schemathesis.openapi.from_wsgi(f"{API}schema/", get_wsgi_application(), headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    figures, failures = {}, {}
    for operation in operations:
        try:
            figures[operation.label] = fuzz_operation(operation, headers, own_path_parameters(operation, rows))
        except Exception as failure:  # every operation runs; all failures are reported at the end
            failures[operation.label] = failure

    # then: every check passed, and every route of the API was covered
    assert not failures, "\n\n".join(f"{label}:\n{failure}" for label, failure in failures.items())
    routes = {re.sub(r"\{\w+\}", "{id}", operation.path.removeprefix(API)) for operation in operations}
    for route in ("endpoints/", "endpoints/{id}/", "endpoints/{id}/rotate-secret/", "event-types/", "events/"):
        assert route in routes, routes
    for route in (
        "events/{id}/",
        "deliveries/",
        "deliveries/{id}/",
        "deliveries/{id}/retry/",
        "deliveries/{id}/cancel/",
    ):
        assert route in routes, routes
    print(f"schemathesis: {len(operations)} operations, {sum(figures.values())} cases: {figures}")


# What the fuzzing found, each as the one request that showed it (all answered by the API, checked
# against the served schema with the same CHECKS).


def call_and_validate(method: str, route: str, **case) -> dict:
    """One explicit request of operation `method route` as user acme-fuzz, validated with CHECKS."""
    headers = basic_auth("acme-fuzz")
    schema = schemathesis.openapi.from_wsgi(f"{API}schema/", get_wsgi_application(), headers=headers)
    response = schema[f"{API}{route}"][method].Case(**case).call_and_validate(headers=headers, checks=CHECKS)
    return {"status": response.status_code, "body": response.json() if response.content else None}


def test_an_endpoint_never_disabled_reads_with_disabled_at_null():
    rows = tenant_rows("acme")
    answer = call_and_validate("GET", "endpoints/{id}/", path_parameters={"id": rows["endpoint"].pk})
    assert answer["status"] == 200 and answer["body"]["disabled_at"] is None


def test_an_error_in_one_list_item_names_the_item_under_its_field():
    answer = call_and_validate(
        "POST", "endpoints/", body={"url": "https://acme.example.com/hook", "event_types": ["order.*", "a\x00"]}
    )
    assert answer == {"status": 400, "body": {"event_types": ["item 1: Null characters are not allowed."]}}


def test_a_body_that_is_not_json_answers_a_documented_400():
    answer = call_and_validate("POST", "endpoints/", body=b"\x00", media_type="application/json")
    assert answer["status"] == 400 and "JSON parse error" in answer["body"]["detail"]


def test_a_time_filter_with_an_offset_postgresql_refuses_is_converted_to_utc():
    tenant_rows("acme")
    answer = call_and_validate("GET", "events/", query={"since": "2020-01-01T00:00:00+21:05"})
    assert answer["status"] == 200 and len(answer["body"]["data"]) == 1


def test_a_time_filter_before_year_1_in_utc_is_refused_with_its_field():
    answer = call_and_validate("GET", "events/", query={"until": "0001-01-01T00:00:00+01:00"})
    assert answer["status"] == 400 and list(answer["body"]) == ["until"]


def test_a_null_character_in_a_filter_is_refused_with_its_field():
    answer = call_and_validate("GET", "events/", query={"type": "order.\x00"})
    assert answer == {"status": 400, "body": {"type": ["Null characters are not allowed."]}}


def test_path_parameters_are_documented_as_the_route_matches_them():
    headers = basic_auth("acme-fuzz")
    schema = schemathesis.openapi.from_wsgi(f"{API}schema/", get_wsgi_application(), headers=headers)
    document = schema.raw_schema
    (pk,) = document["paths"][f"{API}endpoints/{{id}}/"]["get"]["parameters"]
    assert pk["schema"]["minimum"] == 0  # -1 matches no route: the host's own (HTML) 404
    (event_id,) = document["paths"][f"{API}events/{{event_id}}/"]["get"]["parameters"]
    assert event_id["schema"]["pattern"] == "^[^/]+$"


def test_a_missing_permission_answers_a_documented_403(settings):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True  # acme-fuzz holds no permission
    rows = tenant_rows("acme")
    answer = call_and_validate("POST", "deliveries/{id}/retry/", path_parameters={"id": rows["delivery"].pk})
    assert answer == {
        "status": 403,
        "body": {"detail": "This needs the permission deliveries.retry_delivery, which your account does not have."},
    }


def test_deliveries_waiting_for_each_kind_of_reason_read_within_the_schema():
    endpoint = tenant_rows("acme")["endpoint"]
    Endpoint.objects.filter(pk=endpoint.pk).update(paused_until=timezone.now() + timedelta(minutes=1))
    make_chain(endpoint, "order-7", 2)
    for reason in ("rate_limit", "breaker", "sending", "unrecorded"):
        make_waiting(endpoint, reason)
    answer = call_and_validate("GET", "deliveries/")
    waits = [d["waiting"] for d in answer["body"]["data"] if d["waiting"]]
    assert {w["reason"] for w in waits} == {"retry", "ordering", "rate_limit", "breaker", "sending", "unrecorded"}
    assert all(w["until"] for w in waits if w["reason"] in ("retry", "rate_limit", "breaker"))
    assert [w["blocked_by"] for w in waits if w["reason"] == "ordering"] == [answer["body"]["data"][1]["id"]]
