"""Helpers of the customers' API tests: clients acting for a tenant and rows of each tenant.

A user "acme-..." acts for tenant "acme" (tests/api_tenancy.py, WEBHOOKS_API_TENANT of the
test settings).
"""

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from deliveries.publishing import serialize_payload
from endpoints.models import Endpoint

API = "/api/webhooks/"
SECRET_MARKERS = (b"whsec_", b"whsk_")


def client_for(username: str) -> APIClient:
    """An API client authenticated (by the host's session auth: a real login) as `username`."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    client = APIClient()
    client.force_login(user)
    return client


def tenant_rows(tenant: str, failed: bool = True) -> dict:
    """An endpoint of `tenant` with one event, its delivery (failed) and one attempt; ids by kind."""
    endpoint = Endpoint.objects.create(
        url=f"https://{tenant}.example.com/hook",
        tenant=tenant,
        headers={"Authorization": f"Bearer {tenant}-token", "X-Shop": tenant},
    )
    payload = {"order": tenant, "total": 1e16}
    event = Event.objects.create(
        tenant=tenant,
        type="order.paid",
        payload=payload,
        payload_json=serialize_payload(payload),
        fanned_out_at=timezone.now(),
    )
    delivery = Delivery.objects.create(
        event=event,
        endpoint=endpoint,
        status=DeliveryStatus.FAILED if failed else DeliveryStatus.SUCCEEDED,
        attempt_count=1,
        last_status_code=500,
    )
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=timezone.now(),
        duration_ms=12,
        request_headers={"webhook-signature": "[redacted]", "Authorization": "[redacted]"},
        response_status=500,
    )
    return {"endpoint": endpoint, "event": event, "delivery": delivery}


def assert_no_secret(response) -> None:
    """No signing secret or private key anywhere in the raw response bytes."""
    for marker in SECRET_MARKERS:
        assert marker not in response.content, (response.request["PATH_INFO"], response.content[:300])
