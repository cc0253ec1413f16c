"""Adaptive rate limits (endpoints/rate_adaptation.py): a 429 from an endpoint with a rate limit
halves its effective limit, once per period however many 429s a burst brings; reservations keep
below it; it climbs back a step per calm period in which requests were made; a new limit starts
over; admin and webhook_stats show it; an endpoint without a limit sees nothing new and pays no
query. The clock is driven by moving the stored times back (as if a period had passed), and, end
to end, by a real worker and receiver with 2 s periods."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deliveries import publish_many
from deliveries.models import Delivery, DeliveryStatus, Event
from deliveries.sending import send_delivery
from endpoints.models import Endpoint, RateLimitSlot
from endpoints.rate_adaptation import lower_after_429
from endpoints.rate_limits import finish, reserve
from tests.conftest import wait_until
from tests.test_rate_limited_delivery import busiest_window

HOLD = timedelta(seconds=10)
URL = "https://example.com/hook"
ADAPTIVE = ("rate_limit_current", "rate_limit_lowered_at", "rate_limit_calm_since")


def limited(limit: int, period: int, url: str = URL) -> Endpoint:
    return Endpoint.objects.create(url=url, rate_limit=limit, rate_limit_period=period)


def current(endpoint: Endpoint) -> int | None:
    return Endpoint.objects.values_list("rate_limit_current", flat=True).get(pk=endpoint.pk)


def calm_since(endpoint: Endpoint):
    return Endpoint.objects.values_list("rate_limit_calm_since", flat=True).get(pk=endpoint.pk)


def age(endpoint: Endpoint, seconds: float, slots: bool = True) -> None:
    """As if `seconds` had passed: the endpoint's adaptive times (and its slots' times) move back."""
    back = timedelta(seconds=seconds)
    Endpoint.objects.filter(pk=endpoint.pk).update(
        rate_limit_lowered_at=F("rate_limit_lowered_at") - back, rate_limit_calm_since=F("rate_limit_calm_since") - back
    )
    if slots:
        RateLimitSlot.objects.filter(endpoint=endpoint).update(free_at=F("free_at") - back)


def slot_numbers_of(reservation) -> set[int]:
    return set(RateLimitSlot.objects.filter(pk__in=reservation.slot_ids).values_list("number", flat=True))


# --- the decrease -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_429_halves_the_effective_limit_and_reservations_keep_below_it():
    endpoint = limited(8, 60)

    lower_after_429(endpoint)

    stored = Endpoint.objects.get(pk=endpoint.pk)
    assert (stored.rate_limit, stored.rate_limit_current, stored.effective_rate_limit) == (8, 4, 4)
    assert stored.rate_limit_lowered_at is not None and stored.rate_limit_calm_since is None
    reservation = reserve(endpoint, 8, HOLD)
    assert reservation.granted == 4 and slot_numbers_of(reservation) == {0, 1, 2, 3}
    # the ring keeps its slots for the way back up
    assert RateLimitSlot.objects.filter(endpoint=endpoint).count() == 8


@pytest.mark.django_db(transaction=True)
def test_the_429s_of_one_burst_lower_it_once_and_each_later_period_halves_again_down_to_1():
    endpoint = limited(8, 60)
    for _ in range(5):
        lower_after_429(endpoint)
    assert current(endpoint) == 4

    for expected in (2, 1, 1):
        age(endpoint, 61)
        lower_after_429(endpoint)
        lower_after_429(endpoint)
        assert current(endpoint) == expected


@pytest.mark.django_db(transaction=True)
def test_slots_busy_above_the_lowered_limit_keep_their_time_so_no_window_exceeds_the_limit():
    # Given all 4 slots used just now, then a 429 lowering the limit to 2
    endpoint = limited(4, 60)
    finish(reserve(endpoint, 4, HOLD), used=4)
    busy = dict(RateLimitSlot.objects.filter(endpoint=endpoint).values_list("number", "free_at"))
    lower_after_429(endpoint)

    # Then the requests already made still count: nothing may go out, no slot was freed
    assert reserve(endpoint, 4, HOLD).granted == 0
    assert dict(RateLimitSlot.objects.filter(endpoint=endpoint).values_list("number", "free_at")) == busy
    # and once a period has passed, only the two slots below the lowered limit are taken
    age(endpoint, 61)
    reservation = reserve(endpoint, 4, HOLD)
    assert reservation.granted == 2 and slot_numbers_of(reservation) == {0, 1}


# --- the increase -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_climbs_back_a_tenth_per_calm_period_with_requests_made_then_is_the_limit_again():
    # Given an endpoint limited to 20 per 60 s, lowered to 10 by a 429 (steps of 2)
    endpoint = limited(20, 60)
    lower_after_429(endpoint)

    # When a period passes with no request, nothing moves
    age(endpoint, 61)
    assert (current(endpoint), calm_since(endpoint)) == (10, None)
    # the first request made starts the calm period, without a step
    finish(reserve(endpoint, 1, HOLD), used=1)
    assert current(endpoint) == 10 and calm_since(endpoint) is not None
    # and a request within that period changes nothing
    finish(reserve(endpoint, 1, HOLD), used=1)
    assert current(endpoint) == 10

    # Then each period with requests made and no 429 adds 2, back to the limit (null: the limit)
    climbed = []
    for _ in range(5):
        age(endpoint, 61)
        finish(reserve(endpoint, 1, HOLD), used=1)
        climbed.append(current(endpoint))
    assert climbed == [12, 14, 16, 18, None]
    age(endpoint, 61)
    assert reserve(endpoint, 20, HOLD).granted == 20


@pytest.mark.django_db(transaction=True)
def test_a_reservation_that_gets_no_slot_makes_no_step():
    # Given a limit of 4 lowered to 2, the calm clock started by a request on each of slots 0 and 1
    endpoint = limited(4, 60)
    lower_after_429(endpoint)
    finish(reserve(endpoint, 2, HOLD), used=2)
    # and slots 2 and 3 busy too (sends from before the 429)
    RateLimitSlot.objects.filter(endpoint=endpoint, number__gte=2).update(free_at=timezone.now() + HOLD)

    # When a calm period has passed for the endpoint, but not for its slots
    age(endpoint, 61, slots=False)

    # Then a reservation finds no slot, even at 3, and the limit stays at 2

    assert reserve(endpoint, 1, HOLD).granted == 0
    assert current(endpoint) == 2


@pytest.mark.django_db(transaction=True)
def test_a_429_that_does_not_lower_it_still_restarts_the_calm_period():
    endpoint = limited(8, 60)
    lower_after_429(endpoint)
    finish(reserve(endpoint, 1, HOLD), used=1)
    age(endpoint, 30)

    lower_after_429(endpoint)  # half a period after the decrease: no second halving

    assert (current(endpoint), calm_since(endpoint)) == (4, None)
    age(endpoint, 31)
    finish(reserve(endpoint, 1, HOLD), used=1)  # starts a new calm period: no step yet
    assert current(endpoint) == 4


@pytest.mark.django_db(transaction=True)
def test_a_new_limit_starts_at_the_configured_limit_and_other_changes_keep_the_lowered_one():
    endpoint = limited(8, 60)
    lower_after_429(endpoint)

    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    endpoint.description = "orders"
    endpoint.save()
    assert current(endpoint) == 4

    endpoint.rate_limit = 10
    endpoint.save()
    assert Endpoint.objects.values_list(*ADAPTIVE).get(pk=endpoint.pk) == (None, None, None)
    assert reserve(endpoint, 10, HOLD).granted == 10


# --- on the send path: who pays what -------------------------------------------------------------------


def queries_of_one_send(endpoint: Endpoint) -> int:
    event = Event.objects.create(type="order.paid", payload={"n": 1})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint, next_attempt_at=timezone.now())
    with CaptureQueriesContext(connection) as queries:
        outcome = send_delivery(delivery.pk)
    assert outcome is not None and outcome.verdict == "retry"
    return len(queries.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_a_429_costs_one_update_for_a_limited_endpoint_and_nothing_new_for_one_without_a_limit(receiver):
    # Given endpoints with and without a limit whose receivers answer 429 (or 503, for comparison)
    receiver.script("/429", [(429, {"Retry-After": "120"}, b"slow down")])
    receiver.script("/503", [(503, {}, b"")])
    free_429, free_503 = (
        Endpoint.objects.create(url=receiver.url("/429")),
        Endpoint.objects.create(url=receiver.url("/503")),
    )
    limited_429, limited_503 = limited(8, 10, receiver.url("/429")), limited(8, 10, receiver.url("/503"))

    # When each is sent one delivery
    free = queries_of_one_send(free_429), queries_of_one_send(free_503)
    capped = queries_of_one_send(limited_429), queries_of_one_send(limited_503)

    # Then without a limit a 429 costs what a 503 costs, changes nothing new, and its Retry-After
    # still holds the delivery back
    assert free[0] == free[1]
    assert Endpoint.objects.values_list(*ADAPTIVE).get(pk=free_429.pk) == (None, None, None)
    delivery = Delivery.objects.get(endpoint=free_429)
    assert delivery.next_attempt_at - delivery.attempts.get().started_at >= timedelta(seconds=119)
    # and with a limit it costs one UPDATE more, which halves the limit
    assert capped[0] == capped[1] + 1
    assert (current(limited_429), current(limited_503)) == (4, None)


# --- what operators see ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_and_webhook_stats_show_the_lowered_limit(admin_client):
    lowered, steady = limited(60, 10), limited(60, 10, url="https://example.com/other")
    lower_after_429(lowered)
    lowered_at = Endpoint.objects.get(pk=lowered.pk).rate_limit_lowered_at
    at = f"{timezone.localtime(lowered_at):%H:%M:%S}"

    page = admin_client.get(reverse("admin:endpoints_endpoint_change", args=[lowered.pk])).content.decode()
    assert f"rate limit: 60 requests per 10 s (now 30: lowered after a 429 at {at}, recovering)" in page
    page = admin_client.get(reverse("admin:endpoints_endpoint_change", args=[steady.pk])).content.decode()
    assert "rate limit: 60 requests per 10 s<" in page

    out = StringIO()
    call_command("webhook_stats", "--json", stdout=out)
    rows = {row["id"]: row for row in json.loads(out.getvalue())["endpoints"]}
    assert rows[lowered.pk]["rate_limit"] == {
        "requests": 60,
        "period_seconds": 10,
        "effective_requests": 30,
        "lowered_at": lowered_at.isoformat(),
    }
    assert rows[steady.pk]["rate_limit"]["effective_requests"] == 60
    assert rows[steady.pk]["rate_limit"]["lowered_at"] is None
    out = StringIO()
    call_command("webhook_stats", stdout=out)
    assert f"rate limit 60 requests per 10 s (now 30: lowered after a 429 at {at}, recovering)" in out.getvalue()


# --- end to end ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_receiver_answering_429_gets_half_the_rate_then_the_rate_climbs_back(celery_worker, receiver, settings):
    # Given an endpoint limited to 8 requests per 2 s (steps of 1) whose receiver answers its first
    # four requests 429, and retries a second apart
    settings.WEBHOOKS_RETRY_SCHEDULE = "1,1,1"
    receiver.script("/hook", [*[(429, {"Retry-After": "1"}, b"slow down")] * 4, (200, {}, b"ok")])
    endpoint = limited(8, 2, receiver.url("/hook"))

    # When 50 events are published at once
    publish_many([("order.paid", {"n": n}) for n in range(50)])

    # Then the effective limit is halved once, climbs back a step per period, and is the limit again
    seen: list[int | None] = [None]

    def climbed_back() -> bool:
        value = current(endpoint)
        if value != seen[-1]:
            seen.append(value)
        return len(seen) > 1 and value is None

    try:
        wait_until(climbed_back, timeout=90, what="the limit is lowered and climbs back")
    finally:
        print(f"effective limits seen: {seen}")
    assert seen == [None, 4, 5, 6, 7, None]
    wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 50, 60, "50 succeeded")

    # At the receiver: the window after the 429s held at most the lowered limit, none more than the limit
    times = [request.received_at for request in receiver.received("/hook")]
    after = times[4:]  # the first four got the 429s
    next_window = sum(1 for moment in after if moment - after[0] < 2.0)
    print(
        f"MEASURED 429 at 8 per 2 s: limits {seen[1:-1]} then the limit; first window after the 429s "
        f"{next_window}, busiest window {busiest_window(times, 2.0)}, {len(times)} requests in "
        f"{times[-1] - times[0]:.1f} s"
    )
    assert 1 <= next_window <= 4
    assert busiest_window(times, 2.0) <= 8
    assert len(times) == 54  # 50, and the four 429s sent again
