"""Misconfigured model hooks fail at start-up (system checks), and the registry refuses
nonsense at once."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from deliveries import register_model_hook
from deliveries.hooks import check_model_hooks
from tests.hostapp.models import Customer, Shipment

GOOD = {"events": {"created": "order.created"}}


def errors_for(settings, hooks: object) -> list:
    settings.WEBHOOKS_MODEL_HOOKS = hooks
    return check_model_hooks(None)


def test_the_test_configuration_passes(settings):
    assert check_model_hooks(None) == []


@pytest.mark.parametrize(
    ("hooks", "error_id", "message"),
    [
        ([GOOD], "webhooks.E101", "WEBHOOKS_MODEL_HOOKS must be a dict"),
        ({"hostapp.Ordr": GOOD}, "webhooks.E102", "no installed model 'hostapp.Ordr'"),
        ({"Order": GOOD}, "webhooks.E102", "use 'app_label.ModelName'"),
        ({"hostapp.Customer": {"event": {"created": "c.created"}}}, "webhooks.E103", "must be a dict with 'events'"),
        ({"hostapp.Customer": {"events": {"saved": "c.saved"}}}, "webhooks.E103", "some of 'created'"),
        ({"hostapp.Customer": {"events": {}}}, "webhooks.E103", "some of 'created'"),
        ({"hostapp.Customer": {**GOOD, "coalesce": "yes"}}, "webhooks.E103", "'coalesce'] must be True or False"),
        ({"hostapp.Customer": {"events": {"created": "customer created"}}}, "webhooks.E104", "dot-separated"),
        (
            {"hostapp.Customer": {**GOOD, "serializer": "tests.hostapp.nowhere.f"}},
            "webhooks.E105",
            "cannot be imported",
        ),
        ({"hostapp.Customer": {**GOOD, "filter": "tests.hostapp.webhooks.nothing"}}, "webhooks.E105", "cannot be"),
        ({"hostapp.Customer": {**GOOD, "serializer": "tests.hostapp.models.uuid"}}, "webhooks.E105", "is not callable"),
        ({"hostapp.Customer": {**GOOD, "tenant": "account"}}, "webhooks.E106", "not an attribute of hostapp.Customer"),
    ],
)
def test_misconfigured_hook_fails_the_check(settings, hooks, error_id, message):
    [error] = errors_for(settings, hooks)

    assert error.id == error_id
    assert message in error.msg


def test_hook_event_type_missing_from_the_catalog_fails_the_check(settings):
    settings.WEBHOOKS_EVENT_TYPES = {"order.created": {}, "shipment.created": {}, "shipment.updated": {}}

    errors = errors_for(settings, {"hostapp.Customer": GOOD, "hostapp.Order": {"events": {"deleted": "order.deleted"}}})

    assert [(e.id, e.msg) for e in errors] == [
        (
            "webhooks.E107",
            "WEBHOOKS_MODEL_HOOKS['hostapp.Order']: deleted: event type 'order.deleted' is not in "
            "WEBHOOKS_EVENT_TYPES.",
        )
    ]


def test_model_hooked_both_in_settings_and_in_code_fails_the_check(settings):
    errors = errors_for(settings, {"hostapp.Shipment": {"events": {"created": "shipment.created"}}})

    assert [e.id for e in errors] == ["webhooks.E108"]


def test_code_registered_hook_with_a_bad_event_type_fails_the_check(settings):
    from deliveries.hooks import unregister_model_hook

    register_model_hook(Customer, created="customer created")
    try:
        errors = check_model_hooks(None)
    finally:
        unregister_model_hook(Customer)

    assert [e.id for e in errors] == ["webhooks.E104"]
    assert "register_model_hook(hostapp.Customer): created:" in errors[0].msg


def test_registering_a_model_twice_is_refused():
    with pytest.raises(ImproperlyConfigured, match="already has a webhook model hook"):
        register_model_hook(Shipment, created="shipment.created")


def test_registering_without_any_event_type_is_refused():
    with pytest.raises(ImproperlyConfigured, match="needs an event type"):
        register_model_hook(Customer)
