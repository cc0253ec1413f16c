"""The operations behind the console's buttons (deliveries/operations.py), on the cases the
screens do not show: deliveries in flight, paused endpoints, replays through a real worker."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import AttemptTrigger, Delivery, DeliveryAttempt, DeliveryStatus
from deliveries.operations import replay_failed_since, retry_deliveries
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.operators import make_delivery


@pytest.fixture
def endpoint(db) -> Endpoint:
    return Endpoint.objects.create(url="https://receiver.example.com/hook")


@pytest.mark.django_db
def test_a_delivery_being_sent_right_now_is_left_to_its_sender(endpoint):
    # Given a pending delivery a worker holds a live lease on
    sending = make_delivery(endpoint, DeliveryStatus.PENDING)
    lease = timezone.now() + timedelta(seconds=60)
    Delivery.objects.filter(pk=sending.pk).update(locked_until=lease)

    report = retry_deliveries([sending.pk, 999_999])

    assert report.queued == []
    assert dict(report.skipped) == {"being sent right now": 1, "no longer exists": 1}
    assert Delivery.objects.get(pk=sending.pk).locked_until == lease


@pytest.mark.django_db
def test_a_lapsed_lease_does_not_stop_a_retry(endpoint):
    stuck = make_delivery(endpoint, DeliveryStatus.PENDING)
    Delivery.objects.filter(pk=stuck.pk).update(locked_until=timezone.now() - timedelta(seconds=1))

    report = retry_deliveries([stuck.pk])

    assert report.queued == [stuck.pk]
    assert Delivery.objects.get(pk=stuck.pk).locked_until is None


@pytest.mark.django_db
def test_retrying_for_a_paused_endpoint_says_it_waits_for_the_breaker(endpoint):
    Endpoint.objects.filter(pk=endpoint.pk).update(paused_until=timezone.now() + timedelta(minutes=1))
    delivery = make_delivery(endpoint)

    report = retry_deliveries([delivery.pk])

    assert report.summary() == "1 delivery queued (1 will wait for their endpoint's circuit breaker to close)"


@pytest.mark.django_db(transaction=True)
def test_a_replay_is_sent_and_recorded_as_a_replay(celery_worker, receiver):
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    delivery = make_delivery(endpoint, finished_at=timezone.now() - timedelta(minutes=5))

    report = replay_failed_since([endpoint.pk], timezone.now() - timedelta(hours=1))

    assert report.queued == [delivery.pk]
    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == delivery.event.webhook_id
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)
    assert DeliveryAttempt.objects.get(delivery=delivery, number=2).trigger == AttemptTrigger.REPLAY


@pytest.mark.django_db(transaction=True)
def test_a_failed_manual_retry_with_attempts_left_continues_the_schedule(celery_worker, receiver, settings):
    # Given a delivery that failed at once on a 400 (two retries left in its schedule)
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5,0.5"
    settings.WEBHOOKS_RETRY_JITTER = 0
    receiver.script("/hook", [(503, {}, b"busy"), (200, {}, b"ok")])
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    delivery = make_delivery(endpoint, attempts=1, response_status=400)

    # When a manual retry meets a 503
    retry_deliveries([delivery.pk])

    # Then the schedule goes on from there, automatically
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)
    triggers = list(
        DeliveryAttempt.objects.filter(delivery=delivery).order_by("number").values_list("trigger", "response_status")
    )
    assert triggers == [("automatic", 400), ("manual", 503), ("automatic", 200)]
