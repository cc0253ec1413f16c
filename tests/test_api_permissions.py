"""WEBHOOKS_API_CHECK_PERMISSIONS: with it on, every route of the customers' API that changes
state needs the Django permission admin requires for the same action (one table,
deliveries/permissions.py, read by both); without it a request is refused 403 naming the
permission and nothing changes. Off (the default), the tenant function alone decides."""

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import RequestFactory
from django.urls import URLPattern
from rest_framework.test import APIClient

from deliveries.api.permissions import CHANGED_BY_BODY, ROUTE_OPERATIONS, route_operations
from deliveries.api.urls import api_patterns
from deliveries.models import ApiIdempotencyKey, Delivery, DeliveryAttempt, Event
from deliveries.permissions import OPERATION_PERMISSIONS
from endpoints.models import Endpoint
from endpoints.signing_secrets import EndpointSecret
from tests.api_helpers import API, tenant_rows

pytestmark = pytest.mark.django_db

STATE_TABLES = (Endpoint, EndpointSecret, Event, Delivery, DeliveryAttempt, ApiIdempotencyKey, LogEntry)


def api_user(username: str, *permissions: str) -> APIClient:
    """A client logged in as `username` (tenant: the part before '-') holding exactly
    `permissions` ("app.codename"); not staff, as a host's customer usually is not."""
    user = User.objects.create_user(username)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client = APIClient()
    client.force_login(user)
    return client


def database_state() -> dict:
    """Every row of every table an API change could touch."""
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in STATE_TABLES}


@pytest.fixture
def acme() -> dict:
    """An acme endpoint with a failed delivery (retry, replay), and one without any (delete)."""
    rows = tenant_rows("acme")
    rows["bare"] = Endpoint.objects.create(url="https://acme.example.com/bare", tenant="acme")
    return rows


def state_changes(rows: dict) -> list[tuple[str, str, str, dict | None, str]]:
    """(what, method, route, body, the permission admin requires) for each state-changing route,
    with a body that succeeds for a user holding that permission, in an order where each does."""
    endpoint, bare, delivery = rows["endpoint"].pk, rows["bare"].pk, rows["delivery"].pk
    return [
        ("create", "post", "endpoints/", {"url": "https://acme.example.com/new"}, "endpoints.add_endpoint"),
        ("edit", "patch", f"endpoints/{endpoint}/", {"description": "x"}, "endpoints.change_endpoint"),
        (
            "replace",
            "put",
            f"endpoints/{endpoint}/",
            {"url": "https://acme.example.com/moved"},
            "endpoints.change_endpoint",
        ),
        ("delete", "delete", f"endpoints/{bare}/", None, "endpoints.delete_endpoint"),
        ("rotate", "post", f"endpoints/{endpoint}/rotate-secret/", {"grace_seconds": 60}, "endpoints.rotate_secret"),
        ("test event", "post", f"endpoints/{endpoint}/test-event/", None, "endpoints.send_test_event"),
        (
            "replay",
            "post",
            f"endpoints/{endpoint}/replay/",
            {"since": "2020-01-01T00:00:00Z"},
            "deliveries.replay_delivery",
        ),
        ("retry", "post", f"deliveries/{delivery}/retry/", None, "deliveries.retry_delivery"),
        ("cancel", "post", f"deliveries/{delivery}/cancel/", None, "deliveries.cancel_delivery"),
        # last: the routes above refuse (409) to act for a disabled endpoint
        ("disable", "patch", f"endpoints/{endpoint}/", {"is_active": False}, "endpoints.enable_disable_endpoint"),
    ]


def call(client: APIClient, method: str, route: str, body: dict | None, **headers):
    return getattr(client, method)(API + route, body, format="json", headers=headers or None)


# --- the table -------------------------------------------------------------------------------


def test_every_unsafe_method_of_the_api_is_in_the_table_and_every_entry_is_a_route():
    views = {pattern.callback.view_class for pattern in api_patterns if isinstance(pattern, URLPattern)}
    unsafe = {
        (view.__name__, method.upper())
        for view in views
        for method in view.http_method_names
        if method.upper() not in ("GET", "HEAD", "OPTIONS", "TRACE") and hasattr(view, method)
    }
    assert unsafe == set(ROUTE_OPERATIONS)
    for operations in ROUTE_OPERATIONS.values():
        assert all(operation in OPERATION_PERMISSIONS or operation == CHANGED_BY_BODY for operation in operations)


def test_every_permission_of_the_table_exists_in_the_database():
    for permission in OPERATION_PERMISSIONS.values():
        app_label, codename = permission.split(".")
        assert Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists(), permission


def test_admin_asks_each_action_the_permission_the_table_names():
    # Given a user per operation, holding that permission only
    request_factory = RequestFactory()
    endpoint_admin = admin.site._registry[Endpoint]
    delivery_admin = admin.site._registry[Delivery]
    checks = {
        "add_endpoint": endpoint_admin.has_add_permission,
        "change_endpoint": endpoint_admin.has_change_permission,
        "delete_endpoint": endpoint_admin.has_delete_permission,
    }
    for model_admin in (endpoint_admin, delivery_admin):
        for action_name in model_admin.actions:
            for name in getattr(model_admin, action_name).allowed_permissions:
                assert name in OPERATION_PERMISSIONS, (action_name, name)
                checks[name] = getattr(model_admin, f"has_{name}_permission")
    assert set(checks) == set(OPERATION_PERMISSIONS)
    for operation, permission in OPERATION_PERMISSIONS.items():
        holder = User.objects.create_user(f"holder-{operation}", is_staff=True)
        app_label, codename = permission.split(".")
        holder.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        request = request_factory.get("/")
        request.user = User.objects.get(pk=holder.pk)
        others = request_factory.get("/")
        others.user = User.objects.create_user(f"others-{operation}", is_staff=True)
        for other in set(OPERATION_PERMISSIONS.values()) - {permission}:
            app_label, codename = other.split(".")
            others.user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        others.user = User.objects.get(pk=others.user.pk)

        # Then admin allows the holder, and refuses a user holding every other permission
        assert checks[operation](request) is True, operation
        assert checks[operation](others) is False, operation


# --- the setting on --------------------------------------------------------------------------


def test_without_the_permission_each_state_change_is_a_403_naming_it_and_changes_nothing(settings, acme):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    # Given a user of the tenant holding every permission but the one each route needs
    for what, method, route, body, needed in state_changes(acme):
        others = [p for p in set(OPERATION_PERMISSIONS.values()) if p != needed]
        client = api_user(f"acme-without-{what.replace(' ', '-')}", *others)
        before = database_state()

        response = call(client, method, route, body)

        assert response.status_code == 403, (what, response.status_code, response.content)
        assert response.json() == {
            "detail": f"This needs the permission {needed}, which your account does not have."
        }, what
        assert database_state() == before, what


def test_with_the_permission_each_state_change_works_and_is_recorded(settings, acme):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    for what, method, route, body, needed in state_changes(acme):
        client = api_user(f"acme-with-{what.replace(' ', '-')}", needed)
        entries = LogEntry.objects.count()

        response = call(client, method, route, body)

        assert 200 <= response.status_code < 300, (what, response.status_code, response.content)
        assert LogEntry.objects.count() == entries + 1, what


def test_a_superuser_needs_no_explicit_permission(settings, acme):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    User.objects.create_superuser("acme-root")
    client = APIClient()
    client.force_login(User.objects.get(username="acme-root"))
    for what, method, route, body, _ in state_changes(acme):
        response = call(client, method, route, body)
        assert 200 <= response.status_code < 300, (what, response.status_code, response.content)


def test_reads_need_no_permission(settings, acme):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    client = api_user("acme-reader")
    endpoint, event, delivery = acme["endpoint"].pk, acme["event"].webhook_id, acme["delivery"].pk
    for route in ("endpoints/", f"endpoints/{endpoint}/", f"endpoints/{endpoint}/health/", "event-types/"):
        assert client.get(API + route).status_code == 200, route
    for route in ("events/", f"events/{event}/", "deliveries/", f"deliveries/{delivery}/", "schema/"):
        assert client.get(API + route).status_code == 200, route


def test_a_stored_idempotent_answer_is_not_replayed_to_a_user_without_the_permission(settings, acme):
    # Given a rotation done with an Idempotency-Key by a user who may rotate (its answer holds the secret)
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    route = f"endpoints/{acme['endpoint'].pk}/rotate-secret/"
    first = call(api_user("acme-rotator", "endpoints.rotate_secret"), "post", route, {}, **{"Idempotency-Key": "k1"})
    assert first.status_code == 200 and first.json()["secret"].startswith("whsec_")

    # When a user of the same tenant without the permission repeats it with the same key
    repeat = call(api_user("acme-intern"), "post", route, {}, **{"Idempotency-Key": "k1"})

    # Then it is refused before the stored answer is read
    assert repeat.status_code == 403 and "endpoints.rotate_secret" in repeat.json()["detail"]
    assert b"whsec_" not in repeat.content


def test_changing_is_active_alone_needs_only_enable_disable(settings, acme):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    route = f"endpoints/{acme['endpoint'].pk}/"
    switcher = api_user("acme-switcher", "endpoints.enable_disable_endpoint")

    assert call(switcher, "patch", route, {"is_active": False}).status_code == 200
    assert Endpoint.objects.get(pk=acme["endpoint"].pk).is_active is False
    # the same state again changes nothing: it is an edit, admin's change permission
    again = call(switcher, "patch", route, {"is_active": False})
    assert again.status_code == 403 and "endpoints.change_endpoint" in again.json()["detail"]
    # and with another field, both are needed
    both = call(switcher, "patch", route, {"is_active": True, "description": "back"})
    assert both.status_code == 403 and "endpoints.change_endpoint" in both.json()["detail"]
    assert Endpoint.objects.get(pk=acme["endpoint"].pk).is_active is False


def test_a_put_that_repeats_the_state_needs_only_the_change_permission(settings, acme):
    # A client that reads an endpoint and PUTs it back with its is_active unchanged edits, nothing more.
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    editor = api_user("acme-editor", "endpoints.change_endpoint")
    route = f"endpoints/{acme['endpoint'].pk}/"
    body = {"url": "https://acme.example.com/hook", "is_active": True, "description": "same state"}

    assert call(editor, "put", route, body).status_code == 200
    assert Endpoint.objects.get(pk=acme["endpoint"].pk).description == "same state"


def test_switching_between_a_shared_secret_and_ed25519_needs_the_rotate_permission_as_in_admin(settings, acme):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    route = f"endpoints/{acme['endpoint'].pk}/"
    body = {"signature_scheme": "standard_ed25519"}
    secrets_before = list(EndpointSecret.objects.order_by("pk").values())

    refused = call(api_user("acme-editor", "endpoints.change_endpoint"), "patch", route, body)

    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "This needs the permission endpoints.rotate_secret, which your account does not have."
    }
    assert list(EndpointSecret.objects.order_by("pk").values()) == secrets_before
    assert Endpoint.objects.get(pk=acme["endpoint"].pk).signature_scheme == "standard"
    # with both permissions it switches, and shows the new key
    allowed = call(
        api_user("acme-keeper", "endpoints.change_endpoint", "endpoints.rotate_secret"), "patch", route, body
    )
    assert allowed.status_code == 200 and allowed.json()["public_key"].startswith("whpk_")


def test_missing_several_permissions_names_them_all(settings, acme):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    response = call(
        api_user("acme-nobody"),
        "patch",
        f"endpoints/{acme['endpoint'].pk}/",
        {"is_active": False, "signature_scheme": "standard_ed25519"},
    )
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "This needs the permissions endpoints.change_endpoint and endpoints.enable_disable_endpoint and "
        "endpoints.rotate_secret, which your account does not have."
    )


def test_the_schema_names_the_permission_of_each_state_changing_route(settings):
    settings.WEBHOOKS_API_CHECK_PERMISSIONS = True
    schema = api_user("acme-reader").get(API + "schema/").json()
    rotate = schema["paths"][f"{API}endpoints/{{id}}/rotate-secret/"]["post"]
    assert rotate["x-required-permission"] == "endpoints.rotate_secret"
    assert "endpoints.rotate_secret" in rotate["responses"]["403"]["description"]
    patch = schema["paths"][f"{API}endpoints/{{id}}/"]["patch"]
    assert "endpoints.enable_disable_endpoint" in patch["responses"]["403"]["description"]
    assert "x-required-permission" not in schema["paths"][f"{API}events/"]["get"]


# --- the setting off (the default) ----------------------------------------------------------


def test_off_by_default_the_tenant_function_alone_decides(acme):
    from endpoints.app_settings import webhook_settings

    assert webhook_settings.API_CHECK_PERMISSIONS is False
    for what, method, route, body, _ in state_changes(acme):
        response = call(api_user(f"acme-plain-{what.replace(' ', '-')}"), method, route, body)
        assert 200 <= response.status_code < 300, (what, response.status_code, response.content)


def test_route_operations_of_a_read_are_empty():
    from deliveries.api.event_views import EventList

    assert route_operations(EventList, "GET") == ()
