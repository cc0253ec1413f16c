"""Payload keys: JSON object keys are strings, so a key of another type is refused, not
converted (`{1: "x", "1": "y"}` would silently become `{"1": "y"}`), and the walk that checks
them is bounded by the payload limits, whatever the payload's shape."""

import json
import re
import time

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from deliveries import PublishError, publish, publish_many
from deliveries.model_payloads import json_value
from deliveries.models import Event
from deliveries.publishing import payload_structure_error

pytestmark = pytest.mark.django_db


def test_keys_that_would_collide_as_json_are_refused_and_nothing_is_written():
    with pytest.raises(PublishError) as raised:
        publish("a.b", {1: "x", "1": "y"})

    assert str(raised.value) == "payload key 1 at data is an int; keys must be strings (JSON would turn it into '1')"
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"items": [{"sku": "a"}, {2: "x"}]}, "payload key 2 at data.items[1] is an int"),
        (
            {"a": {"b c": {None: 1}}},
            "payload key None at data.a['b c'] is None; keys must be strings (JSON would turn it into 'null')",
        ),
        ({"flags": {True: 1}}, "payload key True at data.flags is a bool"),
        ({"ratio": {1.5: 1}}, "payload key 1.5 at data.ratio is a float"),
        ({"pair": {(1, 2): 1}}, "payload key (1, 2) at data.pair is a tuple"),
    ],
)
def test_a_non_string_key_anywhere_is_refused_with_its_path(data, message):
    with pytest.raises(PublishError, match=re.escape(message)):
        publish("order.paid", data)
    assert Event.objects.count() == 0


def test_publish_many_with_one_bad_item_writes_nothing():
    with (
        pytest.raises(PublishError, match=r"events\[1\]: payload key 7 at data.lines\[0\] is an int"),
        transaction.atomic(),
    ):
        publish_many([("order.paid", {"n": 1}), {"type": "order.paid", "data": {"lines": [{7: "x"}]}}])
    assert Event.objects.count() == 0


def test_string_keys_of_every_kind_are_still_accepted():
    data = {"": 1, "1": 2, "b c": {"é": [{"x": None}]}}
    event = publish("order.paid", data)
    event.refresh_from_db()
    assert event.payload == data


def test_the_model_hook_serializer_refuses_keys_that_collide_once_converted():
    assert json_value({1: "x", "a": [{2: "y"}]}) == {"1": "x", "a": [{"2": "y"}]}
    with pytest.raises(PublishError, match="keys 1 and '1' both become '1'"):
        json_value({1: "x", "1": "y"})


def test_a_payload_with_more_values_than_the_size_limit_holds_is_refused_without_walking_it(settings):
    # Given a payload whose lists share their items: 2**40 values to write out, a few objects in
    # memory (json.dumps, and the depth check before it, never finished)
    settings.WEBHOOKS_MAX_PAYLOAD_BYTES = 1000
    shared: list = ["leaf"]
    for _ in range(40):
        shared = [shared, shared]

    # When it is published, then it is refused after looking at about 1,000 values
    started = time.process_time()
    with pytest.raises(PublishError, match="more than 1000 values; the limit is 1000 bytes"):
        publish("order.paid", {"tree": shared})
    assert Event.objects.count() == 0
    print(f"MEASURED refusing a payload of 2**40 shared values: {(time.process_time() - started) * 1000:.1f} ms CPU")


def test_the_key_check_costs_less_than_the_serialization_it_guards():
    # Given a payload near the 256 kB limit of many small objects: the walk's worst case
    data = {"rows": [{"id": n, "sku": f"s{n}", "tags": ["a", "b"], "meta": {"k": n}} for n in range(4000)]}
    text = json.dumps(data, cls=DjangoJSONEncoder, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    assert 200 * 1024 < len(text) < 256 * 1024

    # When the key and shape check runs, and the serialization publish() does after it
    walk = cpu_seconds(lambda: payload_structure_error(data, 256 * 1024))
    dumps = cpu_seconds(
        lambda: json.dumps(data, cls=DjangoJSONEncoder, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    )

    # Then it finds nothing wrong (the figures are reported, not asserted: the machine is shared)
    assert payload_structure_error(data, 256 * 1024) is None
    print(
        f"MEASURED {len(text) // 1024} kB payload of 24,000 values: key and shape check {walk * 1000:.2f} ms, "
        f"json.dumps {dumps * 1000:.2f} ms (CPU, best of 10)"
    )


def cpu_seconds(call) -> float:
    best = float("inf")
    for _ in range(10):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return best
