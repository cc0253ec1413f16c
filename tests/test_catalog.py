"""The event type catalog (WEBHOOKS_EVENT_TYPES): unknown types and payloads failing their
schema are refused before anything is written; broken schemas fail at start-up."""

import pytest

from deliveries import PublishError, publish, publish_many
from deliveries.catalog import check_event_catalog
from deliveries.models import Event

ORDER_PAID = {
    "description": "An order was paid.",
    "schema": {
        "type": "object",
        "required": ["order", "amount"],
        "properties": {"order": {"type": "integer"}, "amount": {"type": "string", "pattern": r"^\d+\.\d{2}$"}},
    },
}


@pytest.fixture
def catalog(settings):
    settings.WEBHOOKS_EVENT_TYPES = {"order.paid": ORDER_PAID, "order.note": {"description": "No schema."}}
    return settings.WEBHOOKS_EVENT_TYPES


@pytest.mark.django_db
def test_payload_matching_its_schema_is_published(catalog):
    event = publish("order.paid", {"order": 1, "amount": "12.50"})

    assert Event.objects.get() == event


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"order": 1}, r"at \$: 'amount' is a required property"),
        ({"order": "1", "amount": "1.00"}, r"at \$\.order: '1' is not of type 'integer'"),
        ({"order": 1, "amount": "1"}, r"at \$\.amount: '1' does not match"),
    ],
)
def test_payload_failing_its_schema_is_refused_and_nothing_is_written(catalog, data, message):
    with pytest.raises(PublishError, match=r"payload of 'order\.paid' does not match its schema " + message):
        publish("order.paid", data)

    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_schema_sees_the_payload_as_it_is_sent(catalog):
    # A Decimal is sent as a string, so a schema asking for a string accepts it.
    from decimal import Decimal

    publish("order.paid", {"order": 1, "amount": Decimal("3.10")})

    assert Event.objects.get().payload == {"order": 1, "amount": "3.10"}


@pytest.mark.django_db
def test_type_missing_from_the_catalog_is_refused(catalog):
    with pytest.raises(PublishError, match=r"event type 'order\.refunded' is not in WEBHOOKS_EVENT_TYPES"):
        publish("order.refunded", {})

    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_type_without_a_schema_takes_any_payload(catalog):
    publish("order.note", {"anything": ["goes"]})

    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_empty_catalog_accepts_every_type(settings):
    settings.WEBHOOKS_EVENT_TYPES = {}

    publish("whatever.happened", {"n": 1})

    assert Event.objects.count() == 1


@pytest.mark.django_db
def test_publish_many_refuses_the_item_failing_its_schema_and_writes_nothing(catalog):
    with pytest.raises(PublishError, match=r"events\[1\]: payload of 'order\.paid' does not match"):
        publish_many([("order.paid", {"order": 1, "amount": "1.00"}), ("order.paid", {"order": 2})])

    assert Event.objects.count() == 0


def test_changed_catalog_takes_effect_at_once(settings):
    settings.WEBHOOKS_EVENT_TYPES = {"a.b": {"schema": {"type": "object", "required": ["x"]}}}
    from deliveries.catalog import catalog_error

    assert catalog_error("a.b", {}) is not None
    settings.WEBHOOKS_EVENT_TYPES = {"a.b": {"schema": {"type": "object"}}}
    assert catalog_error("a.b", {}) is None


def test_valid_catalog_passes_the_check(catalog):
    assert check_event_catalog(None) == []


@pytest.mark.parametrize(
    ("catalog", "error_id", "message"),
    [
        (["order.paid"], "webhooks.E111", "WEBHOOKS_EVENT_TYPES must be a dict"),
        ({"order paid": {}}, "webhooks.E112", "must be dot-separated segments"),
        ({"order.paid": {"shema": {}}}, "webhooks.E113", "optional keys 'description' and 'schema'"),
        ({"order.paid": "a description"}, "webhooks.E113", "must be a dict"),
        ({"order.paid": {"schema": "object"}}, "webhooks.E114", "must be a JSON Schema"),
        ({"order.paid": {"schema": {"type": "objekt"}}}, "webhooks.E114", "not a valid JSON Schema at $.type"),
        ({"order.paid": {"schema": {"required": "order"}}}, "webhooks.E114", "'order' is not of type 'array'"),
    ],
)
def test_broken_catalog_fails_the_check(settings, catalog, error_id, message):
    settings.WEBHOOKS_EVENT_TYPES = catalog

    [error] = check_event_catalog(None)

    assert error.id == error_id
    assert message in error.msg
