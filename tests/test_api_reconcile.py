"""A receiver reconciles through the customers' API: it misses the webhooks sent while it was
down, then lists `events/?after=<the last event it processed>` and gets exactly those, in order.
The real pipeline: publish(), a Celery worker, HTTP to a receiver on 127.0.0.1."""

from deliveries import publish
from deliveries.models import Delivery
from endpoints.models import Endpoint
from tests.api_helpers import API, client_for
from tests.conftest import wait_until


def test_a_receiver_back_from_an_outage_lists_exactly_the_events_it_missed(celery_worker, receiver, settings):
    # given: failed sends wait an hour, so nothing the receiver missed reaches it again during the test
    settings.WEBHOOKS_RETRY_SCHEDULE = "3600"
    Endpoint.objects.create(url=receiver.url("/hook"), tenant="acme")
    Endpoint.objects.create(url=receiver.url("/globex"), tenant="globex")
    # the receiver processes what arrives while it is up
    before = [publish("order.paid", {"order": n}, tenant="acme") for n in range(3)]
    receiver.wait_for(3, "/hook")
    processed = [r.headers["webhook-id"] for r in receiver.received("/hook")]
    assert sorted(processed) == sorted(e.webhook_id for e in before)
    last_processed = before[-1].webhook_id

    # when: it is down (every request answered 500) while more events are published
    receiver.script("/hook", [(500, {}, b"down")])
    missed = [publish("order.paid", {"order": n}, tenant="acme") for n in range(3, 8)]
    publish("order.paid", {"order": "theirs"}, tenant="globex")  # another tenant's: never listed
    wait_until(
        lambda: Delivery.objects.filter(event__in=missed, attempt_count=1, last_status_code=500).count() == 5,
        what="the five sends during the outage failed",
    )
    # the five requests reached it and were answered 500: missed, from the receiver's side
    assert len(receiver.wait_for(8, "/hook")) == 8

    # then: back up, it asks for everything after the last event it processed, two per page
    client = client_for("acme-receiver")
    listed, url = [], f"{API}events/?after={last_processed}&limit=2"
    while url:
        page = client.get(url).json()
        listed += page["data"]
        url = page["next"]
    assert [e["id"] for e in listed] == [e.webhook_id for e in missed]
    assert [e["data"] for e in listed] == [{"order": n} for n in range(3, 8)]
