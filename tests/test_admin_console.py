"""The operator console in Django admin: what each screen shows, what each action does, who
may run it. Real PostgreSQL; the tests that send use a real worker, Redis and receiver."""

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
import standardwebhooks
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deliveries.models import AttemptTrigger, Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.operations import TEST_EVENT_TYPE
from endpoints.models import Endpoint
from tests.conftest import wait_until
from tests.operators import VIEW_PERMISSIONS, make_delivery, make_staff

CHANGELIST = {
    "delivery": reverse("admin:deliveries_delivery_changelist"),
    "event": reverse("admin:deliveries_event_changelist"),
    "endpoint": reverse("admin:endpoints_endpoint_changelist"),
}


def delivery_url(delivery: Delivery) -> str:
    return reverse("admin:deliveries_delivery_change", args=[delivery.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def operator_client(db) -> Client:
    client = Client()
    client.force_login(make_staff("operator"))
    return client


@pytest.fixture
def viewer_client(db) -> Client:
    """Staff who may look at everything and change nothing."""
    client = Client()
    client.force_login(make_staff("viewer", VIEW_PERMISSIONS))
    return client


@pytest.fixture
def endpoint(db) -> Endpoint:
    return Endpoint.objects.create(url="https://receiver.example.com/hook", tenant="acme")


def past_week() -> str:
    """The value the date filter's "Past 7 days" link carries, URL-encoded."""
    return quote(str(timezone.localtime() - timedelta(days=7)))


def run_action(client: Client, model: str, action: str, ids: list, follow: bool = True, **fields):
    data = {"action": action, "_selected_action": [str(i) for i in ids], "index": "0", **fields}
    return client.post(CHANGELIST[model], data, follow=follow)


# --- deliveries --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_delivery_detail_shows_every_attempt_in_order_with_headers_body_and_error(operator_client, endpoint):
    # Given a delivery that failed three times: twice a 503, then a connection error
    delivery = make_delivery(endpoint, attempts=2, response_status=503)
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=3,
        started_at=timezone.now(),
        duration_ms=5012,
        request_headers={"webhook-id": delivery.event.webhook_id},
        error_class="ConnectionError",
        error_message="connection refused",
        outcome="failed",
    )

    page = operator_client.get(delivery_url(delivery)).content.decode()

    # Then every attempt is there, oldest first, with what was sent and what came back
    rows = re.findall(r'id="attempt-(\d+)"', page)
    assert rows == ["1", "2", "3"]
    assert "5012 ms" in page
    assert "ConnectionError: connection refused" in page
    assert "bad request" in page  # response body
    assert "&quot;Content-Type&quot;: &quot;text/plain&quot;" in page  # response headers, pretty JSON
    assert delivery.event.webhook_id in page
    assert 'id="retry-now"' in page


@pytest.mark.django_db(transaction=True)
def test_retry_now_sends_a_failed_delivery_again_as_a_manual_attempt(celery_worker, receiver):
    # Given a delivery that failed (the receiver answered 400), and a receiver that now accepts
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))
    delivery = make_delivery(endpoint, attempts=1)
    client = Client()
    client.force_login(make_staff("operator"))

    # When the operator presses Retry now on its page
    response = client.post(reverse("admin:deliveries_delivery_retry", args=[delivery.pk]), follow=True)

    # Then it is queued, said so, received with the same webhook id, and recorded as manual
    assert any("queued" in m for m in messages_of(response))
    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == delivery.event.webhook_id
    wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED)
    attempt = DeliveryAttempt.objects.get(delivery=delivery, number=2)
    assert attempt.trigger == AttemptTrigger.MANUAL
    assert attempt.response_status == 200


@pytest.mark.django_db(transaction=True)
def test_a_failed_delivery_can_be_retried_again_and_again(celery_worker, receiver, settings):
    # Given a delivery whose retry schedule is spent, to a receiver that keeps answering 500
    settings.WEBHOOKS_RETRY_SCHEDULE = "1,1"  # three attempts in all
    receiver.script("/down", [(500, {}, b"down")])
    endpoint = Endpoint.objects.create(url=receiver.url("/down"))
    delivery = make_delivery(endpoint, attempts=3, response_status=500)
    client = Client()
    client.force_login(make_staff("operator"))

    for number in (4, 5):
        # When the operator retries it
        client.post(reverse("admin:deliveries_delivery_retry", args=[delivery.pk]))

        # Then it makes exactly one more attempt, manual, and fails again at once
        wait_until(lambda n=number: Delivery.objects.get(pk=delivery.pk).attempt_count == n)
        wait_until(lambda: Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED)
        assert DeliveryAttempt.objects.get(delivery=delivery, number=number).trigger == AttemptTrigger.MANUAL
    assert len(receiver.received("/down")) == 2


@pytest.mark.django_db
def test_bulk_retry_says_how_many_were_queued_and_why_others_were_not(operator_client, endpoint):
    # Given two failed deliveries, a succeeded one, and a failed one of a disabled endpoint
    failed = [make_delivery(endpoint), make_delivery(endpoint)]
    succeeded = make_delivery(endpoint, DeliveryStatus.SUCCEEDED)
    disabled = Endpoint.objects.create(url="https://gone.example.com/hook")
    disabled.disable("customer left")
    of_disabled = make_delivery(disabled)

    # When all four are retried from the list
    response = run_action(operator_client, "delivery", "retry_now", [d.pk for d in [*failed, succeeded, of_disabled]])

    # Then the two failed ones are pending and due now, and the message counts every case
    [message] = messages_of(response)
    assert message == ("2 deliveries queued; skipped 1 already succeeded, 1 endpoint disabled (enable it first).")
    for delivery in failed:
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.next_attempt_at <= timezone.now()
        assert delivery.queued_until > timezone.now()  # the sweep leaves it to the queued message
    assert Delivery.objects.get(pk=succeeded.pk).status == DeliveryStatus.SUCCEEDED
    assert Delivery.objects.get(pk=of_disabled.pk).status == DeliveryStatus.FAILED
    # and each retried delivery's History says who retried it
    history = LogEntry.objects.filter(change_message="Retried now (manual attempt).")
    assert sorted(int(e.object_id) for e in history) == sorted(d.pk for d in failed)
    assert {e.user.username for e in history} == {"operator"}


@pytest.mark.django_db
def test_retrying_a_succeeded_delivery_is_refused_with_the_reason(operator_client, endpoint):
    delivery = make_delivery(endpoint, DeliveryStatus.SUCCEEDED)

    response = operator_client.post(reverse("admin:deliveries_delivery_retry", args=[delivery.pk]), follow=True)

    assert messages_of(response) == [f"Delivery {delivery.pk} was not retried: already succeeded."]
    assert 'id="retry-now"' not in response.content.decode()  # no button on a succeeded delivery


@pytest.mark.django_db
def test_staff_without_retry_permission_see_no_retry_and_are_refused_403(viewer_client, endpoint):
    delivery = make_delivery(endpoint)

    detail = viewer_client.get(delivery_url(delivery))
    listing = viewer_client.get(CHANGELIST["delivery"])

    assert detail.status_code == 200
    assert 'id="retry-now"' not in detail.content.decode()
    assert "retry_now" not in listing.content.decode()
    assert viewer_client.post(reverse("admin:deliveries_delivery_retry", args=[delivery.pk])).status_code == 403
    assert run_action(viewer_client, "delivery", "retry_now", [delivery.pk], follow=False).status_code == 403
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_history_cannot_be_edited_or_deleted_in_admin(operator_client, endpoint):
    delivery = make_delivery(endpoint)
    event_url = reverse("admin:deliveries_event_change", args=[delivery.event_id])

    # Nobody, superusers included, gets a form, an add page or a delete page for history
    superuser = Client()
    superuser.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests"))
    for client in (operator_client, superuser):
        assert client.post(event_url, {"type": "order.refunded"}).status_code == 403
        assert client.post(delivery_url(delivery), {"status": "succeeded"}).status_code == 403
        assert client.get(reverse("admin:deliveries_event_add")).status_code == 403
        assert client.get(reverse("admin:deliveries_delivery_delete", args=[delivery.pk])).status_code == 403
        assert "delete_selected" not in client.get(CHANGELIST["delivery"]).content.decode()
    assert Event.objects.get(pk=delivery.event_id).type == "order.paid"


@pytest.mark.django_db
def test_delivery_list_filters_by_status_endpoint_tenant_event_type_and_date(operator_client, endpoint):
    other = Endpoint.objects.create(url="https://other.example.com/hook", tenant="globex")
    paid = make_delivery(endpoint, event_type="order.paid")
    refunded = make_delivery(endpoint, DeliveryStatus.SUCCEEDED, event_type="order.refunded")
    invoice = make_delivery(other, DeliveryStatus.PENDING, event_type="invoice.paid")
    old = make_delivery(other, event_type="invoice.paid")
    Delivery.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))

    def listed(query: str) -> set[int]:
        response = operator_client.get(CHANGELIST["delivery"] + query)
        assert response.status_code == 200, query
        return {d.pk for d in response.context["cl"].result_list}

    assert listed("") == {paid.pk, refunded.pk, invoice.pk, old.pk}
    assert listed("?status__exact=failed") == {paid.pk, old.pk}
    assert listed(f"?endpoint={other.pk}") == {invoice.pk, old.pk}
    assert listed("?tenant=acme") == {paid.pk, refunded.pk}
    assert listed("?type=order.*") == {paid.pk, refunded.pk}
    assert listed("?type=invoice.paid&status__exact=pending") == {invoice.pk}
    assert old.pk not in listed(f"?created_at__gte={past_week()}")
    assert listed(f"?event={paid.event.webhook_id}") == {paid.pk}


@pytest.mark.django_db
def test_delivery_search_finds_by_delivery_id_webhook_id_and_idempotency_key(operator_client, endpoint):
    keyed = make_delivery(endpoint, idempotency_key="order-7-paid")
    other = make_delivery(endpoint)

    def found(term: str) -> set[int]:
        response = operator_client.get(CHANGELIST["delivery"], {"q": term})
        return {d.pk for d in response.context["cl"].result_list}

    assert found("order-7-paid") == {keyed.pk}
    assert found(other.event.webhook_id) == {other.pk}
    assert found(str(other.event_id)) == {other.pk}
    assert found(str(other.pk)) == {other.pk}
    assert found("nothing-like-this") == set()


# --- events ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_event_search_accepts_the_webhook_id_the_uuid_and_the_idempotency_key(operator_client, endpoint):
    keyed = make_delivery(endpoint, idempotency_key="invoice-12").event
    other = make_delivery(endpoint).event

    def found(term: str) -> set:
        response = operator_client.get(CHANGELIST["event"], {"q": term})
        return {e.pk for e in response.context["cl"].result_list}

    assert found(other.webhook_id) == {other.pk}
    assert found(str(other.pk)) == {other.pk}
    assert found("invoice-12") == {keyed.pk}
    assert found("evt_not-hex") == set()


@pytest.mark.django_db
def test_event_list_filters_by_type_tenant_and_time(operator_client, endpoint):
    paid = make_delivery(endpoint, event_type="order.paid").event
    invoice = make_delivery(endpoint, event_type="invoice.paid").event
    globex = Event.objects.create(type="order.paid", tenant="globex", payload={}, fanned_out_at=timezone.now())
    Event.objects.filter(pk=invoice.pk).update(created_at=timezone.now() - timedelta(days=40))

    def listed(query: str) -> set:
        return {e.pk for e in operator_client.get(CHANGELIST["event"] + query).context["cl"].result_list}

    assert listed("?type=order.paid") == {paid.pk, globex.pk}
    assert listed("?tenant=acme") == {paid.pk, invoice.pk}
    assert listed(f"?created_at__gte={past_week()}") == {paid.pk, globex.pk}
    page = operator_client.get(CHANGELIST["event"]).content.decode()
    assert "1 failed" in page  # each event's deliveries by status


@pytest.mark.django_db
def test_event_detail_pretty_prints_the_payload_and_lists_its_deliveries(operator_client, endpoint):
    delivery = make_delivery(endpoint, payload={"order": {"id": 7, "note": "café"}})
    second = Endpoint.objects.create(url="https://second.example.com/hook", tenant="acme")
    Delivery.objects.create(event=delivery.event, endpoint=second, status=DeliveryStatus.SUCCEEDED)

    page = operator_client.get(reverse("admin:deliveries_event_change", args=[delivery.event_id])).content.decode()

    assert "{\n  &quot;order&quot;: {\n    &quot;id&quot;: 7,\n    &quot;note&quot;: &quot;café&quot;" in page
    assert delivery.event.webhook_id in page
    assert delivery_url(delivery) in page
    assert "webhooks-status-failed" in page and "webhooks-status-succeeded" in page
    assert "2 deliveries" in page
    assert "<textarea" not in page  # shown, not editable


# --- endpoints -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_endpoint_list_shows_state_success_rate_last_success_and_backlog(operator_client, endpoint):
    # Given an endpoint with 3 of 4 attempts today successful, 1 pending and 2 failed deliveries
    for _ in range(3):
        make_delivery(endpoint, DeliveryStatus.SUCCEEDED)
    make_delivery(endpoint, DeliveryStatus.PENDING, attempts=0)
    make_delivery(endpoint)
    make_delivery(endpoint, attempts=0)
    paused = Endpoint.objects.create(url="https://paused.example.com/hook")
    Endpoint.objects.filter(pk=paused.pk).update(paused_until=timezone.now() + timedelta(minutes=1))
    disabled = Endpoint.objects.create(url="https://off.example.com/hook")
    disabled.disable("410 Gone on delivery 9")

    response = operator_client.get(CHANGELIST["endpoint"])
    page = response.content.decode()

    rows = {e.pk: e for e in response.context["cl"].result_list}
    assert (rows[endpoint.pk].pending_count, rows[endpoint.pk].failed_count) == (1, 2)
    assert rows[endpoint.pk].attempt_rate.attempts == 4
    assert "75.0 %" in page
    assert rows[endpoint.pk].last_success_at is not None
    assert '#b35c00">paused</span> until' in page
    assert '#c62828">disabled</span> since' in page and ">410 Gone on delivery 9</span>" in page
    assert f"?endpoint={endpoint.pk}&amp;status__exact=failed" in page  # the count links to them

    def listed(query: str) -> set[int]:
        return {e.pk for e in operator_client.get(CHANGELIST["endpoint"] + query).context["cl"].result_list}

    assert listed("?state=paused") == {paused.pk}
    assert listed("?state=disabled") == {disabled.pk}
    assert listed("?state=active") == {endpoint.pk}
    assert listed("?q=paused.example") == {paused.pk}
    assert listed("?tenant=acme") == {endpoint.pk}


@pytest.mark.django_db
def test_enable_action_enables_disabled_and_paused_endpoints_and_says_so(operator_client, endpoint):
    disabled = Endpoint.objects.create(url="https://off.example.com/hook")
    disabled.disable("operator test")
    kept = make_delivery(disabled, DeliveryStatus.PENDING, attempts=0)
    Delivery.objects.filter(pk=kept.pk).update(next_attempt_at=None)  # parked while disabled
    paused = Endpoint.objects.create(url="https://paused.example.com/hook")
    Endpoint.objects.filter(pk=paused.pk).update(paused_until=timezone.now() + timedelta(minutes=1))

    response = run_action(operator_client, "endpoint", "enable_endpoints", [endpoint.pk, disabled.pk, paused.pk])

    assert messages_of(response) == [
        "2 endpoints enabled; their kept deliveries go out with the next sweep; 1 endpoint was already active."
    ]
    disabled.refresh_from_db()
    paused.refresh_from_db()
    assert disabled.is_active and disabled.disabled_reason == ""
    assert paused.paused_until is None
    assert Delivery.objects.get(pk=kept.pk).next_attempt_at is not None  # resumed


@pytest.mark.django_db
def test_disable_action_asks_for_a_reason_then_records_it(operator_client, endpoint):
    # The first POST shows a form asking why
    form_page = run_action(operator_client, "endpoint", "disable_endpoints", [endpoint.pk])
    assert "Disable endpoints" in form_page.content.decode()
    assert Endpoint.objects.get(pk=endpoint.pk).is_active

    # Submitting it disables, with the reason and who did it
    response = run_action(
        operator_client, "endpoint", "disable_endpoints", [endpoint.pk], apply="Disable", reason="customer asked"
    )
    assert messages_of(response) == ["1 endpoint disabled: customer asked (by operator)."]
    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert endpoint.disabled_reason == "customer asked (by operator)"


@pytest.mark.django_db(transaction=True)
def test_send_test_event_reaches_only_the_selected_endpoint(celery_worker, receiver):
    # Given two endpoints of one tenant, the selected one subscribed to other types only
    selected = Endpoint.objects.create(url=receiver.url("/selected"), tenant="acme", event_types=["invoice.*"])
    Endpoint.objects.create(url=receiver.url("/sibling"), tenant="acme")
    client = Client()
    client.force_login(make_staff("operator"))

    response = run_action(client, "endpoint", "send_test_events", [selected.pk])

    # Then a signed webhook.test arrives there, and only there
    [message] = messages_of(response)
    assert message.startswith("Test event queued for 1 endpoint: deliveries")
    [request] = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in request.headers.items()}
    body = standardwebhooks.Webhook(selected.secret).verify(request.body, headers)
    assert body["type"] == TEST_EVENT_TYPE
    assert request.path == "/selected"
    wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 1)
    assert receiver.received("/sibling") == []
    assert Delivery.objects.count() == 1


@pytest.mark.django_db
def test_send_test_event_refuses_a_disabled_endpoint(operator_client, endpoint):
    endpoint.disable("paused for maintenance")

    response = run_action(operator_client, "endpoint", "send_test_events", [endpoint.pk])

    assert messages_of(response) == [f"Not sent: endpoint {endpoint.pk} is disabled (paused for maintenance)."]
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_rotate_secret_shows_the_new_secret_once_and_the_old_one_keeps_signing(operator_client, endpoint):
    old_secret = endpoint.secret

    # When the operator rotates with the default grace period
    form_page = run_action(operator_client, "endpoint", "rotate_secrets", [endpoint.pk]).content.decode()
    assert 'value="24"' in form_page
    response = run_action(
        operator_client, "endpoint", "rotate_secrets", [endpoint.pk], apply="Rotate", grace_hours="24"
    )

    # Then the new secret is shown on the page it lands on
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    new_secret = endpoint.secret
    assert new_secret != old_secret
    assert new_secret in response.content.decode()
    assert response.headers["Cache-Control"].startswith("max-age=0")
    assert LogEntry.objects.get(object_id=str(endpoint.pk)).change_message == (
        "Rotated the signing secret; the old one signs 24 h more."
    )
    # and both sign for 24 hours
    assert endpoint.live_secrets() == [new_secret, old_secret]
    expiry = endpoint.secrets.order_by("created_at").first().expires_at
    assert timedelta(hours=23, minutes=59) < expiry - timezone.now() <= timedelta(hours=24)

    # A reload, or the endpoint's own page, never shows it again
    reload = operator_client.get(reverse("admin:endpoints_endpoint_new_secrets")).content.decode()
    assert new_secret not in reload and 'id="no-secret"' in reload
    change_page = operator_client.get(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk])).content.decode()
    assert new_secret not in change_page and old_secret not in change_page
    assert new_secret not in operator_client.get(CHANGELIST["endpoint"]).content.decode()


@pytest.mark.django_db
def test_creating_an_endpoint_in_admin_shows_its_secret_once(operator_client):
    response = operator_client.post(
        reverse("admin:endpoints_endpoint_add"),
        {
            "url": "https://new.example.com/hook",
            "tenant": "acme",
            "event_types": "[]",
            "headers": "{}",
            "sensitive_headers": "[]",
            "signature_scheme": "standard",
            "description": "",
        },
        follow=True,
    )

    endpoint = Endpoint.objects.get(url="https://new.example.com/hook")
    assert endpoint.secret in response.content.decode()
    reload = operator_client.get(reverse("admin:endpoints_endpoint_new_secrets")).content.decode()
    assert endpoint.secret not in reload


@pytest.mark.django_db
def test_replay_failed_since_asks_for_the_time_and_replays_only_later_failures(operator_client, endpoint):
    now = timezone.now()
    early = make_delivery(endpoint, finished_at=now - timedelta(hours=5))
    late = make_delivery(endpoint, finished_at=now - timedelta(hours=1))
    succeeded = make_delivery(endpoint, DeliveryStatus.SUCCEEDED, finished_at=now - timedelta(hours=1))
    elsewhere = make_delivery(Endpoint.objects.create(url="https://other.example.com/hook"))

    form_page = run_action(operator_client, "endpoint", "replay_failed", [endpoint.pk]).content.decode()
    assert 'type="datetime-local"' in form_page

    since = timezone.localtime(now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    response = run_action(operator_client, "endpoint", "replay_failed", [endpoint.pk], apply="Replay", since=since)

    [message] = messages_of(response)
    assert message.endswith(": 1 delivery queued.")
    assert Delivery.objects.get(pk=late.pk).status == DeliveryStatus.PENDING
    for untouched, status in ((early, "failed"), (succeeded, "succeeded"), (elsewhere, "failed")):
        assert Delivery.objects.get(pk=untouched.pk).status == status


@pytest.mark.django_db
def test_replay_refuses_a_time_in_the_future(operator_client, endpoint):
    make_delivery(endpoint)
    since = timezone.localtime(timezone.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")

    page = run_action(operator_client, "endpoint", "replay_failed", [endpoint.pk], apply="Replay", since=since)

    assert "That time is in the future" in page.content.decode()
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_an_endpoint_with_deliveries_cannot_be_deleted_in_admin(operator_client, endpoint):
    make_delivery(endpoint)
    superuser = Client()
    superuser.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests"))

    assert superuser.get(reverse("admin:endpoints_endpoint_delete", args=[endpoint.pk])).status_code == 403
    assert "delete_selected" not in superuser.get(CHANGELIST["endpoint"]).content.decode()


ACTIONS = [
    ("endpoint", "enable_endpoints", {}),
    ("endpoint", "disable_endpoints", {"apply": "Disable", "reason": "x"}),
    ("endpoint", "send_test_events", {}),
    ("endpoint", "rotate_secrets", {"apply": "Rotate", "grace_hours": "24"}),
    ("endpoint", "replay_failed", {"apply": "Replay", "since": "2026-01-01T00:00"}),
    ("delivery", "retry_now", {}),
    ("delivery", "cancel_pending", {}),
]


@pytest.mark.parametrize(("model", "action", "fields"), ACTIONS, ids=[a for _, a, _ in ACTIONS])
@pytest.mark.django_db
def test_staff_without_the_permission_neither_see_nor_can_post_an_action(
    viewer_client, endpoint, model, action, fields
):
    delivery = make_delivery(endpoint)
    target = endpoint.pk if model == "endpoint" else delivery.pk
    secret = endpoint.secret

    assert f'value="{action}"' not in viewer_client.get(CHANGELIST[model]).content.decode()
    assert run_action(viewer_client, model, action, [target], follow=False, **fields).status_code == 403

    endpoint.refresh_from_db()
    assert endpoint.is_active and endpoint.secret == secret
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_the_operator_sees_every_action(operator_client, endpoint):
    make_delivery(endpoint)
    endpoints_page = operator_client.get(CHANGELIST["endpoint"]).content.decode()
    deliveries_page = operator_client.get(CHANGELIST["delivery"]).content.decode()
    for model, action, _ in ACTIONS:
        assert f'value="{action}"' in (endpoints_page if model == "endpoint" else deliveries_page)


@pytest.mark.django_db
def test_no_page_shows_a_signing_secret(operator_client, endpoint):
    delivery = make_delivery(endpoint)
    pages = [
        CHANGELIST["endpoint"],
        reverse("admin:endpoints_endpoint_change", args=[endpoint.pk]),
        CHANGELIST["delivery"],
        delivery_url(delivery),
        reverse("admin:deliveries_event_change", args=[delivery.event_id]),
    ]
    for url in pages:
        page = operator_client.get(url).content.decode()
        assert endpoint.secret not in page, url
        assert "whsec_" not in page, url
