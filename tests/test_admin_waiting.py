"""Why a pending delivery waits, in the console: the deliveries list and page, the waiting
filter, Cancel, the ordering keys and the delivery each one waits for, an endpoint's backlog.
Real PostgreSQL; deliveries are written in each state as deliveries.scheduling leaves them."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deliveries import ordering
from deliveries.admin.waiting import attach_blocking_heads, moment
from deliveries.backlog import Waiting, backlog_by_endpoint, waiting_condition, waiting_of
from deliveries.models import Delivery, DeliveryStatus
from endpoints.models import Endpoint
from tests.operators import VIEW_PERMISSIONS, make_chain, make_delivery, make_staff, make_waiting

pytestmark = pytest.mark.django_db

DELIVERIES = reverse("admin:deliveries_delivery_changelist")
ORDERING_KEYS = reverse("admin:deliveries_orderingkey_changelist")
HISTORY_MESSAGE = "Cancelled (not to be sent)."


def change_url(delivery: Delivery) -> str:
    return reverse("admin:deliveries_delivery_change", args=[delivery.pk])


def cancel_url(delivery: Delivery) -> str:
    return reverse("admin:deliveries_delivery_cancel", args=[delivery.pk])


def row_of(page: str, delivery: Delivery) -> str:
    """The HTML of the list row of `delivery`."""
    marker = f'<th class="field-id"><a href="{change_url(delivery)}">'
    [row] = [row for row in page.split("<tr") if marker in row]
    return row


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def run_action(client: Client, action: str, deliveries: list[Delivery], follow: bool = True):
    data = {"action": action, "_selected_action": [str(d.pk) for d in deliveries], "index": "0"}
    return client.post(DELIVERIES, data, follow=follow)


@pytest.fixture
def operator_client() -> Client:
    client = Client()
    client.force_login(make_staff("operator"))
    return client


@pytest.fixture
def viewer_client() -> Client:
    client = Client()
    client.force_login(make_staff("viewer", VIEW_PERMISSIONS))
    return client


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint.objects.create(url="https://receiver.example.com/hook", tenant="acme")


@pytest.fixture
def paused() -> Endpoint:
    """An endpoint whose circuit breaker is open for another minute."""
    endpoint = Endpoint.objects.create(url="https://paused.example.com/hook", tenant="acme")
    Endpoint.objects.filter(pk=endpoint.pk).update(paused_until=timezone.now() + timedelta(minutes=1))
    endpoint.refresh_from_db()
    return endpoint


@pytest.fixture
def one_of_each(endpoint, paused) -> dict[str, Delivery]:
    """A pending delivery in every waiting state (the ordered one behind the retrying one), and
    a cancelled one."""
    head, behind = make_chain(endpoint, "order-7", 2, head_waiting="retry")
    deliveries = {"retry": head, "ordering": behind, "breaker": make_waiting(paused, "breaker")}
    for state in ("due", "sending", "rate_limit", "disabled", "unverified", "unrecorded"):
        deliveries[state] = make_waiting(endpoint, state)
    deliveries["cancelled"] = make_delivery(endpoint, DeliveryStatus.CANCELLED)
    return deliveries


# --- what the list and the page say ------------------------------------------------------------


def test_the_list_says_what_each_pending_delivery_waits_for(operator_client, one_of_each, paused):
    d = one_of_each
    page = operator_client.get(DELIVERIES).content.decode()

    head = d["retry"]
    expected = {
        "due": "due now",
        "sending": f"being sent (lease until {moment(d['sending'].locked_until)})",
        "retry": f"waiting: Retry schedule, until {moment(head.next_attempt_at)}",
        "rate_limit": f"waiting: Rate limit, until {moment(d['rate_limit'].next_attempt_at)}",
        "breaker": f"waiting: Circuit breaker, until {moment(paused.paused_until)}",
        "disabled": "waiting: Endpoint disabled",
        "unverified": "waiting: Endpoint not verified",
        "unrecorded": "waiting: Its endpoint (no reason recorded)",
        "ordering": f'waiting: Earlier delivery of its ordering key: <a href="{change_url(head)}" '
        f'class="webhooks-blocking-head">#{head.pk}</a>',
    }
    for state, text in expected.items():
        assert text in row_of(page, d[state]), state
    # The blocking head's summary: its sequence, what it waits for, its attempt and error
    assert "(sequence 1, retry schedule, attempt 1, HTTP 500)" in row_of(page, d["ordering"])
    # A cancelled delivery: a neutral chip, and nothing to wait for
    cancelled = row_of(page, d["cancelled"])
    assert 'class="webhooks-status webhooks-status-cancelled" style="color:#6b6b6b">cancelled<' in cancelled
    assert '<td class="field-waiting_display">-</td>' in cancelled


def test_the_waiting_filter_the_backlog_counts_and_each_row_agree(operator_client, one_of_each, endpoint, paused):
    now = timezone.now()
    pending = {state: d for state, d in one_of_each.items() if state != "cancelled"}

    # Each filter value lists exactly the delivery in that state
    for state in Waiting.values:
        listed = operator_client.get(DELIVERIES + f"?waiting={state}").context["cl"].result_list
        assert [row.pk for row in listed] == [pending[state].pk], state
    assert not operator_client.get(DELIVERIES + "?waiting=lost").context["cl"].result_list
    # The per-endpoint counts come to the same, from one grouped query
    with CaptureQueriesContext(connection) as queries:
        backlog = backlog_by_endpoint([endpoint.pk, paused.pk], now)
    assert len(queries) == 1
    assert backlog[paused.pk] == {"breaker": 1}
    assert backlog[endpoint.pk] == {state: 1 for state in pending if state != "breaker"}
    # and so does each delivery, read without a query
    for state, delivery in pending.items():
        assert waiting_of(delivery, now) == state
        assert Delivery.objects.filter(waiting_condition(state, now)).get() == delivery
    assert waiting_of(one_of_each["cancelled"], now) is None


def test_a_delivery_behind_its_key_shows_the_key_its_sequence_and_the_delivery_it_waits_for(operator_client, endpoint):
    # Given a key whose head waits for a retry, with two deliveries behind it
    head, _, third = make_chain(endpoint, "order-7", 3)

    page = operator_client.get(change_url(third)).content.decode()

    assert ordering.blocking_head(third) == head
    assert f'<a href="{change_url(head)}" class="webhooks-blocking-head">#{head.pk}</a>' in page
    assert re.search(r'<div class="readonly">order-7</div>', page)
    assert re.search(r'<div class="readonly">3</div>', page)  # its sequence
    assert "3 pending of this key to this endpoint, 2 of them waiting behind the earliest" in page
    assert f"?endpoint={endpoint.pk}&amp;key=order-7" in page  # the key's deliveries
    # The head's page offers Cancel; a delivery without a key has no ordering section
    assert 'id="cancel-delivery"' in operator_client.get(change_url(head)).content.decode()
    plain = operator_client.get(change_url(make_waiting(endpoint, "retry"))).content.decode()
    assert ">Ordering</h2>" not in plain and ">Ordering</h2>" in page


def test_heads_looked_up_for_a_page_are_those_the_ordering_module_finds(endpoint, paused):
    # Given keys whose head is the first, a later one (the first finished), or parked itself
    first = make_chain(endpoint, "a", 3)
    later = make_chain(endpoint, "b", 3)
    Delivery.objects.filter(pk=later[0].pk).update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None)
    Delivery.objects.filter(pk=later[1].pk).update(next_attempt_at=timezone.now(), parked_reason="")
    parked_head = make_chain(paused, "a", 2, head_waiting="breaker")

    rows = list(Delivery.objects.filter(parked_reason="ordering").select_related("endpoint"))
    with CaptureQueriesContext(connection) as queries:
        attach_blocking_heads(rows, timezone.now())

    assert len(queries) == 1
    assert {row.pk: row.blocking_head for row in rows} == {row.pk: ordering.blocking_head(row) for row in rows}
    assert {row.blocking_head.pk for row in rows} == {first[0].pk, later[1].pk, parked_head[0].pk}


# --- Cancel ------------------------------------------------------------------------------------


def test_cancelling_the_head_of_a_key_lets_the_next_one_go_and_says_so_in_history(operator_client, endpoint):
    # Given a key whose head keeps failing, two deliveries behind it, and a succeeded delivery
    head, second, third = make_chain(endpoint, "order-7", 3)
    succeeded = make_delivery(endpoint, DeliveryStatus.SUCCEEDED)

    # When an operator cancels the head (and the succeeded one) from the list
    response = run_action(operator_client, "cancel_pending", [head, succeeded])

    # Then the head is cancelled, the next of its key is due, the last still waits behind it
    assert messages_of(response) == [
        "1 delivery cancelled; skipped 1 already succeeded or cancelled. They will not be sent, and the next "
        "delivery of each one's ordering key, if any, goes out (Retry now sends one after all)."
    ]
    head.refresh_from_db()
    assert (head.status, head.next_attempt_at, head.parked_reason) == (DeliveryStatus.CANCELLED, None, "")
    second.refresh_from_db()
    assert waiting_of(second, timezone.now()) == Waiting.DUE
    assert Delivery.objects.get(pk=third.pk).parked_reason == "ordering"
    assert ordering.blocking_head(third) == second
    assert Delivery.objects.get(pk=succeeded.pk).status == DeliveryStatus.SUCCEEDED
    # and the head's History says who cancelled it
    [entry] = LogEntry.objects.filter(change_message=HISTORY_MESSAGE)
    assert (int(entry.object_id), entry.user.username) == (head.pk, "operator")


def test_the_cancel_button_cancels_one_pending_delivery_and_refuses_a_finished_one(operator_client, endpoint):
    pending = make_waiting(endpoint, "breaker")
    succeeded = make_delivery(endpoint, DeliveryStatus.SUCCEEDED)

    response = operator_client.post(cancel_url(pending), follow=True)

    assert messages_of(response) == [
        f"Delivery {pending.pk} cancelled: it will not be sent, and the next delivery of its ordering key, "
        "if any, goes out (Retry now sends it after all)."
    ]
    assert Delivery.objects.get(pk=pending.pk).status == DeliveryStatus.CANCELLED
    assert 'id="cancel-delivery"' not in response.content.decode()  # nothing left to cancel
    assert 'id="retry-now"' in response.content.decode()
    assert messages_of(operator_client.post(cancel_url(succeeded), follow=True)) == [
        f"Delivery {succeeded.pk} was not cancelled: already succeeded or cancelled."
    ]
    assert operator_client.get(cancel_url(pending)).status_code == 405
    assert LogEntry.objects.filter(change_message=HISTORY_MESSAGE).count() == 1


def test_staff_without_the_cancel_permission_see_no_cancel_and_are_refused(viewer_client, endpoint):
    pending = make_waiting(endpoint, "retry")

    assert 'value="cancel_pending"' not in viewer_client.get(DELIVERIES).content.decode()
    assert 'id="cancel-delivery"' not in viewer_client.get(change_url(pending)).content.decode()
    assert run_action(viewer_client, "cancel_pending", [pending], follow=False).status_code == 403
    assert viewer_client.post(cancel_url(pending)).status_code == 403

    assert Delivery.objects.get(pk=pending.pk).status == DeliveryStatus.PENDING
    assert not LogEntry.objects.exists()


# --- ordering keys -----------------------------------------------------------------------------


def test_the_ordering_keys_list_shows_each_key_its_backlog_and_the_head_that_blocks_it(viewer_client, endpoint):
    # Given a key held up by a failing head, and a key with nothing pending
    head, _, _ = make_chain(endpoint, "order-7", 3)
    done = make_chain(endpoint, "order-8", 1)[0]
    Delivery.objects.filter(pk=done.pk).update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None)

    # When staff who may see deliveries open the ordering keys
    response = viewer_client.get(ORDERING_KEYS)

    # Then each key shows its endpoint, last sequence, pending count and head
    page = response.content.decode()
    [blocked] = [row for row in page.split("<tr") if ">order-7<" in row]
    assert f"#{endpoint.pk} https://receiver.example.com/hook" in blocked
    assert '<td class="field-last_sequence">3</td>' in blocked
    assert "?endpoint=" in blocked and '>3</a><br><span class="quiet">2 waiting behind the head</span>' in blocked
    assert f'<a href="{change_url(head)}" class="webhooks-blocking-head">#{head.pk}</a>' in blocked
    assert f"waiting: Retry schedule, until {moment(head.next_attempt_at)}" in blocked
    assert "1 attempt, HTTP 500" in blocked
    [idle] = [row for row in page.split("<tr") if ">order-8<" in row]
    assert '<td class="field-head_display">-</td>' in idle

    # and it is searched by key (exactly, or by its beginning) and filtered by state
    def keys(query: str) -> list[str]:
        return sorted(row.key for row in viewer_client.get(ORDERING_KEYS + query).context["cl"].result_list)

    assert keys("?q=order-7") == ["order-7"]
    assert keys("?q=order") == []
    assert keys("?q=order-*") == ["order-7", "order-8"]
    assert keys("?chain=blocked") == ["order-7"]
    assert keys("?chain=idle") == ["order-8"]
    assert keys(f"?endpoint={endpoint.pk}&chain=pending") == ["order-7"]
    # Read-only: its page opens, nothing can be changed or deleted
    row = response.context["cl"].result_list[0]
    assert viewer_client.get(reverse("admin:deliveries_orderingkey_change", args=[row.pk])).status_code == 200
    assert viewer_client.post(reverse("admin:deliveries_orderingkey_delete", args=[row.pk])).status_code == 403


# --- endpoints and events ----------------------------------------------------------------------


def test_an_endpoint_shows_its_backlog_by_what_it_waits_for(operator_client, endpoint):
    # Given an endpoint with deliveries due, retrying and parked for several reasons
    for state in ("due", "retry", "retry", "breaker", "breaker", "breaker"):
        make_waiting(endpoint, state)
    make_chain(endpoint, "order-7", 2)
    others = [Endpoint.objects.create(url=f"https://other-{n}.example.com/hook") for n in range(3)]
    make_waiting(others[0], "disabled")

    # The list: one grouped query for the whole page, a short line under the pending count
    with CaptureQueriesContext(connection) as queries:
        page = operator_client.get(reverse("admin:endpoints_endpoint_changelist")).content.decode()
    assert len([q for q in queries.captured_queries if "CASE WHEN" in q["sql"]]) == 1
    assert "due 1 · retry 3 · breaker 3 · ordering 1" in page
    assert "disabled 1" in page

    # The endpoint's page: every group with its count, each a link to those deliveries
    page = operator_client.get(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])).content.decode()
    link = f'<a href="{DELIVERIES}?endpoint={endpoint.pk}&amp;waiting=breaker">Circuit breaker</a>'
    assert f'<tr><td>{link}</td><td class="webhooks-count">3</td></tr>' in page
    assert '<tr><td>Rate limit</td><td class="webhooks-count">0</td></tr>' in page
    assert "rate limit: none" in page
    assert f'<a href="{ORDERING_KEYS}?endpoint={endpoint.pk}">ordering keys</a>' in page


def test_an_event_counts_its_cancelled_deliveries_and_says_why_the_others_wait(operator_client, endpoint, paused):
    delivery = make_waiting(paused, "breaker")
    event = delivery.event
    Delivery.objects.create(event=event, endpoint=endpoint, status=DeliveryStatus.CANCELLED)

    listing = operator_client.get(reverse("admin:deliveries_event_changelist")).content.decode()
    page = operator_client.get(reverse("admin:deliveries_event_change", args=[event.pk])).content.decode()

    assert '<span style="color:#8a6d00">1 pending</span>, <span style="color:#6b6b6b">1 cancelled</span>' in listing
    assert f"waiting: Circuit breaker, until {moment(paused.paused_until)}" in page
    assert '<strong class="webhooks-status webhooks-status-cancelled">cancelled</strong>' in page
