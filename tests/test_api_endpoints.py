"""endpoints/ of the customers' API: create (secret shown once), read, change, enable/disable,
delete (refused with deliveries), rotate the secret; the model's validation, as field errors."""

import pytest

from endpoints.models import Endpoint
from tests.api_helpers import API, assert_no_secret, client_for, tenant_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return client_for("acme-alice")


def test_create_shows_the_secret_once_and_signs_with_it(acme):
    response = acme.post(
        API + "endpoints/",
        {"url": "https://acme.example.com/hook", "event_types": ["order.*"], "description": "orders"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    endpoint = Endpoint.objects.get(pk=body["id"])
    assert body["secret"].startswith("whsec_") and body["secret"] == endpoint.secret
    assert body["event_types"] == ["order.*"] and body["is_active"] is True and body["public_key"] is None
    read = acme.get(API + f"endpoints/{endpoint.pk}/")
    assert "secret" not in read.json()
    assert_no_secret(read)


def test_an_ed25519_endpoint_shows_its_public_key_never_its_private_key(acme):
    response = acme.post(
        API + "endpoints/",
        {"url": "https://acme.example.com/ed", "signature_scheme": "standard_ed25519"},
        format="json",
    )
    assert response.status_code == 201, response.content
    endpoint = Endpoint.objects.get(pk=response.json()["id"])
    assert response.json()["secret"] is None
    assert response.json()["public_key"] == endpoint.public_key and endpoint.public_key.startswith("whpk_")
    assert_no_secret(response)


def test_invalid_input_is_a_400_naming_each_field_and_writes_nothing(acme):
    response = acme.post(
        API + "endpoints/",
        {"url": "ftp://acme.example.com/hook", "event_types": ["not a type!"], "signature_prefix": "sha256="},
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()
    assert {"url", "event_types"} <= set(errors), errors
    assert all(isinstance(messages, list) and messages for messages in errors.values())
    # a JSON type error is the same shape
    wrong_type = acme.post(API + "endpoints/", {"url": "https://a.example.com/", "headers": ["x"]}, format="json")
    assert wrong_type.status_code == 400 and list(wrong_type.json()) == ["headers"]
    assert acme.post(API + "endpoints/", {}, format="json").json() == {"url": ["This field is required."]}
    assert not Endpoint.objects.exists()


def test_patch_changes_given_fields_keeps_hidden_header_values_and_put_replaces(acme):
    endpoint = tenant_rows("acme")["endpoint"]
    response = acme.patch(
        API + f"endpoints/{endpoint.pk}/",
        {"description": "new", "headers": {"Authorization": "[hidden]", "X-Shop": "acme-2"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["secret"] is None
    endpoint.refresh_from_db()
    assert endpoint.description == "new" and endpoint.url == "https://acme.example.com/hook"
    assert endpoint.request_headers() == {"Authorization": "Bearer acme-token", "X-Shop": "acme-2"}
    response = acme.put(API + f"endpoints/{endpoint.pk}/", {"url": "https://acme.example.com/v2"}, format="json")
    assert response.status_code == 200, response.content
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.description, endpoint.headers) == ("https://acme.example.com/v2", "", {})
    bad = acme.patch(API + f"endpoints/{endpoint.pk}/", {"url": "http://"}, format="json")
    assert bad.status_code == 400 and list(bad.json()) == ["url"]


def test_is_active_disables_and_enables_as_an_operator_does(acme):
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")
    Endpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=9)
    response = acme.patch(API + f"endpoints/{endpoint.pk}/", {"is_active": False}, format="json")
    assert response.json()["is_active"] is False
    assert response.json()["disabled_reason"] == "disabled through the API"
    endpoint.refresh_from_db()
    assert not endpoint.is_active and endpoint.disabled_at is not None
    response = acme.patch(API + f"endpoints/{endpoint.pk}/", {"is_active": True}, format="json")
    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.disabled_at is None and endpoint.consecutive_failures == 0


def test_delete_is_refused_while_the_endpoint_has_deliveries(acme):
    with_deliveries = tenant_rows("acme")["endpoint"]
    response = acme.delete(API + f"endpoints/{with_deliveries.pk}/")
    assert response.status_code == 409 and "disable it instead" in response.json()["detail"]
    assert Endpoint.objects.filter(pk=with_deliveries.pk).exists()
    unused = Endpoint.objects.create(url="https://acme.example.com/unused", tenant="acme")
    assert acme.delete(API + f"endpoints/{unused.pk}/").status_code == 204
    assert not Endpoint.objects.filter(pk=unused.pk).exists()


def test_rotate_secret_shows_the_new_secret_once_and_the_old_one_signs_for_the_grace(acme):
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")
    old = endpoint.secret
    response = acme.post(API + f"endpoints/{endpoint.pk}/rotate-secret/", {"grace_seconds": 3600}, format="json")
    assert response.status_code == 200, response.content
    new = response.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert endpoint.live_secrets() == [new, old]
    assert acme.post(API + f"endpoints/{endpoint.pk}/rotate-secret/", {"grace_seconds": -1}, format="json").json() == {
        "grace_seconds": ["Ensure this value is greater than or equal to 0."]
    }


def test_switching_to_a_shared_secret_scheme_shows_the_new_secret_in_that_answer(acme):
    endpoint = Endpoint.objects.create(
        url="https://acme.example.com/hook", tenant="acme", signature_scheme="standard_ed25519"
    )
    response = acme.patch(API + f"endpoints/{endpoint.pk}/", {"signature_scheme": "standard"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["secret"] == endpoint.secret and response.json()["secret"].startswith("whsec_")
    assert response.json()["key_switched_until"] is not None


def test_a_put_without_is_active_leaves_a_disabled_endpoint_disabled(acme):
    endpoint = Endpoint.objects.create(url="https://acme.example.com/hook", tenant="acme")
    endpoint.disable("410 Gone")
    response = acme.put(API + f"endpoints/{endpoint.pk}/", {"url": "https://acme.example.com/v2"}, format="json")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert response.json()["disabled_reason"] == "410 Gone"
