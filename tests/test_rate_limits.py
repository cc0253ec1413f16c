"""Per-endpoint rate limits (endpoints/rate_limits.py): no window of one period holds more than
the limit, measured at a real receiver, whoever sends (threads here and another process); slots
follow the limit as it changes; unused and abandoned slots come free; the fields are validated
in the model, admin and the API; an endpoint without a limit costs no query."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from endpoints.models import Endpoint, RateLimitSlot
from endpoints.rate_limits import finish, next_free_at, reserve
from tests.api_helpers import API, client_for
from tests.conftest import wait_until
from tests.rate_limit_load import send_from_threads

HOLD = timedelta(seconds=10)
URL = "https://example.com/hook"


def limited(limit: int, period: int, url: str = URL) -> Endpoint:
    return Endpoint.objects.create(url=url, rate_limit=limit, rate_limit_period=period)


def slot_numbers(endpoint: Endpoint) -> list[int]:
    return sorted(RateLimitSlot.objects.filter(endpoint=endpoint).values_list("number", flat=True))


# --- the limit, at the receiver ------------------------------------------------------------------


@pytest.mark.slow
def test_threads_and_another_process_never_exceed_the_limit_at_the_receiver(processes, receiver, tmp_path):
    # Given an endpoint allowing 10 requests per second, and a second process ready to send
    limit, period, per_thread, threads = 10, 1.0, 5, 4
    endpoint = limited(limit, int(period), url=receiver.url("/limited"))
    go = tmp_path / "go"
    argv = ["-m", "tests.rate_limit_load", str(endpoint.pk), receiver.url("/limited"), str(per_thread)]
    other = processes.python("other-process", [*argv, str(threads), "other", str(go)], settings.CELERY_BROKER_URL)
    wait_until(lambda: "READY" in other.output() or not other.alive, timeout=30, what="the other process starts")

    # When both processes send 4 x 5 requests each at once, more than the limit allows
    go.touch()
    sent_here = sum(send_from_threads(endpoint.pk, receiver.url("/limited"), per_thread, threads, "here"))
    assert other.process.wait(timeout=90) == 0, other.tail()

    # Then every request arrived, some from each process
    arrivals = receiver.received("/limited")
    assert sent_here == per_thread * threads and len(arrivals) == 2 * per_thread * threads
    senders = {request.headers["X-Sender"].split("-")[0] for request in arrivals}
    assert senders == {"here", "other"}
    # and the requests on each slot arrived at least a period apart
    by_slot: dict[str, list[float]] = {}
    for request in arrivals:
        by_slot.setdefault(request.headers["X-Slot"], []).append(request.received_at)
    assert len(by_slot) <= limit
    for slot, times in by_slot.items():
        gaps = [later - earlier for earlier, later in zip(sorted(times), sorted(times)[1:], strict=False)]
        assert all(gap >= period for gap in gaps), f"slot {slot}: requests {min(gaps):.3f} s apart"
    # so no window of one period (ends included) holds more than the limit
    times = sorted(request.received_at for request in arrivals)
    busiest = max(sum(1 for t in times if start <= t <= start + period) for start in times)
    assert busiest <= limit


# --- slots: used, unused, abandoned ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_unused_slots_are_free_again_at_once():
    endpoint = limited(3, 60)
    reservation = reserve(endpoint, 3, HOLD)
    assert reservation.granted == 3
    finish(reservation, used=1)
    assert reserve(endpoint, 3, HOLD).granted == 2


@pytest.mark.django_db(transaction=True)
def test_a_reservation_never_finished_frees_after_its_hold_and_one_period():
    # Given a worker that took the only slot with a 1 s hold and died
    endpoint = limited(1, 1)
    before = timezone.now()
    abandoned = reserve(endpoint, 1, hold=timedelta(seconds=1))
    assert abandoned.granted == 1

    # Then the slot stays taken for the hold plus one period (a request started at the end of the
    # hold still counts for a period)
    assert abandoned.held_until >= before + timedelta(seconds=2)
    assert reserve(endpoint, 1, HOLD).granted == 0
    assert abs(next_free_at(endpoint) - abandoned.held_until) < timedelta(seconds=0.5)
    # and then it is free
    wait_until(lambda: reserve(endpoint, 1, HOLD).granted == 1, timeout=15, what="the slot frees")


@pytest.mark.django_db(transaction=True)
def test_a_finish_after_the_hold_lapsed_leaves_the_next_reservation_alone():
    # Given a reservation whose hold lapsed, and the slot taken again since
    endpoint = limited(1, 1)
    late = reserve(endpoint, 1, hold=timedelta(0))
    again = wait_until(lambda: reserve(endpoint, 1, HOLD).granted, timeout=15, what="the slot frees")
    assert again == 1

    # When the late worker finishes, using nothing (which would free its slot)
    finish(late, used=0)

    # Then the slot stays with the new reservation
    assert reserve(endpoint, 1, HOLD).granted == 0


@pytest.mark.django_db(transaction=True)
def test_next_free_at_is_when_the_earliest_used_slot_frees():
    endpoint = limited(2, 60)
    assert next_free_at(endpoint) <= timezone.now()
    finish(reserve(endpoint, 2, HOLD), used=2)
    wait = next_free_at(endpoint) - timezone.now()
    assert timedelta(seconds=55) < wait <= timedelta(seconds=60)


# --- the limit changes --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_lowering_the_limit_leaves_only_the_slots_below_it():
    endpoint = limited(4, 60)
    finish(reserve(endpoint, 4, HOLD), used=0)

    endpoint.rate_limit = 2
    endpoint.save()

    assert slot_numbers(endpoint) == [0, 1]
    reservation = reserve(endpoint, 4, HOLD)
    assert reservation.granted == 2
    assert set(RateLimitSlot.objects.filter(pk__in=reservation.slot_ids).values_list("number", flat=True)) == {0, 1}


@pytest.mark.django_db(transaction=True)
def test_slots_used_before_the_limit_was_lowered_still_count_when_it_is_raised_again():
    # Given all three slots used, then the limit lowered to 1 and raised back to 3
    endpoint = limited(3, 60)
    finish(reserve(endpoint, 3, HOLD), used=3)
    endpoint.rate_limit = 1
    endpoint.save()
    endpoint.rate_limit = 3
    endpoint.save()

    # Then nothing may be sent before the period has passed
    assert reserve(endpoint, 3, HOLD).granted == 0


@pytest.mark.django_db(transaction=True)
def test_raising_the_limit_adds_free_slots():
    endpoint = limited(2, 60)
    finish(reserve(endpoint, 2, HOLD), used=2)

    endpoint.rate_limit = 5
    endpoint.save()

    assert slot_numbers(endpoint) == [0, 1, 2, 3, 4]
    assert reserve(endpoint, 5, HOLD).granted == 3


@pytest.mark.django_db(transaction=True)
def test_a_longer_period_keeps_the_slots_used_within_it_busy():
    endpoint = limited(1, 1)
    finish(reserve(endpoint, 1, HOLD), used=1)

    endpoint.rate_limit_period = 60
    endpoint.save()

    assert next_free_at(endpoint) - timezone.now() > timedelta(seconds=55)
    assert reserve(endpoint, 1, HOLD).granted == 0


@pytest.mark.django_db(transaction=True)
def test_removing_the_limit_clears_the_free_slots_and_a_stale_endpoint_is_granted_everything():
    endpoint = limited(3, 60)
    stale = Endpoint.objects.get(pk=endpoint.pk)

    endpoint.rate_limit = endpoint.rate_limit_period = None
    endpoint.save()

    assert slot_numbers(endpoint) == []
    reservation = reserve(stale, 5, HOLD)  # loaded while limited: the database's limit counts
    assert (reservation.granted, reservation.limited) == (5, False)
    assert next_free_at(stale) is None


@pytest.mark.django_db(transaction=True)
def test_a_limit_written_past_save_gets_its_slots_when_first_short():
    endpoint = Endpoint.objects.create(url=URL)
    Endpoint.objects.filter(pk=endpoint.pk).update(rate_limit=3, rate_limit_period=60)
    endpoint.refresh_from_db()

    assert reserve(endpoint, 3, HOLD).granted == 0  # no slots yet
    assert next_free_at(endpoint) <= timezone.now()  # which makes them
    assert reserve(endpoint, 3, HOLD).granted == 3


# --- cost and misuse ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_endpoint_without_a_limit_costs_no_query(django_assert_num_queries):
    endpoint = Endpoint.objects.create(url=URL)
    with django_assert_num_queries(0):
        reservation = reserve(endpoint, 10, HOLD)
        finish(reservation, used=10)
        assert next_free_at(endpoint) is None
    assert (reservation.granted, reservation.limited) == (10, False)


@pytest.mark.django_db
def test_reserving_inside_a_transaction_is_refused():
    # A reservation rolled back after its requests went out would forget them.
    endpoint = limited(2, 1)
    with pytest.raises(RuntimeError, match=r"outside transaction\.atomic"):
        reserve(endpoint, 1, HOLD)


@pytest.mark.django_db(transaction=True)
def test_finish_refuses_more_uses_than_granted():
    reservation = reserve(limited(2, 1), 2, HOLD)
    with pytest.raises(ValueError, match="between 0 and 2"):
        finish(reservation, used=3)


# --- validation: model, admin, API ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("rate_limit", "period", "field", "message"),
    [
        (60, None, "rate_limit_period", "needs its period"),
        (None, 10, "rate_limit", "needs a rate limit"),
        (0, 10, "rate_limit", "at least 1 request"),
        (10_001, 10, "rate_limit", "at most 10000 requests"),
        (60, 0, "rate_limit_period", "at least 1 second"),
        (60, 86_401, "rate_limit_period", "at most 86400 seconds"),
    ],
)
def test_invalid_rate_limits_are_refused_and_nothing_is_written(rate_limit, period, field, message):
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url=URL, rate_limit=rate_limit, rate_limit_period=period)
    assert any(message in text for text in raised.value.message_dict[field])
    assert not Endpoint.objects.exists() and not RateLimitSlot.objects.exists()


@pytest.mark.django_db
def test_the_api_sets_reads_and_validates_the_rate_limit():
    acme = client_for("acme-alice")
    created = acme.post(API + "endpoints/", {"url": URL, "rate_limit": 60, "rate_limit_period": 10}, format="json")
    assert created.status_code == 201, created.content
    assert (created.json()["rate_limit"], created.json()["rate_limit_period"]) == (60, 10)
    endpoint = Endpoint.objects.get(pk=created.json()["id"])
    assert slot_numbers(endpoint) == list(range(60))

    alone = acme.patch(API + f"endpoints/{endpoint.pk}/", {"rate_limit": None}, format="json")
    assert alone.status_code == 400 and "clear both" in alone.json()["rate_limit"][0]
    too_many = acme.patch(API + f"endpoints/{endpoint.pk}/", {"rate_limit": 10_001}, format="json")
    assert too_many.status_code == 400 and "rate_limit" in too_many.json()

    cleared = acme.patch(
        API + f"endpoints/{endpoint.pk}/", {"rate_limit": None, "rate_limit_period": None}, format="json"
    )
    assert cleared.status_code == 200 and cleared.json()["rate_limit"] is None
    assert slot_numbers(endpoint) == []


@pytest.mark.django_db
def test_the_admin_form_sets_the_rate_limit(admin_client):
    page = admin_client.get(reverse("admin:endpoints_endpoint_add")).content.decode()
    assert 'name="rate_limit"' in page and 'name="rate_limit_period"' in page

    form = {"url": URL, "tenant": "", "description": "", "event_types": "[]", "headers": "{}"}
    form |= {"sensitive_headers": "[]", "signature_scheme": "standard", "rate_limit": "100", "rate_limit_period": "60"}
    admin_client.post(reverse("admin:endpoints_endpoint_add"), form)

    endpoint = Endpoint.objects.get()
    assert (endpoint.rate_limit, endpoint.rate_limit_period) == (100, 60)
    assert len(slot_numbers(endpoint)) == 100
