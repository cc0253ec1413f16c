"""What the host's own code does, run by the test inside the host's virtual environment:
`python manage.py shell -c "from shop.scenario import run; run(url)"`. Prints one JSON line."""

import json
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client

import deliveries
import endpoints
from deliveries import publish
from endpoints.models import Endpoint
from shop.models import Order


def run(receiver_url: str) -> None:
    endpoint = Endpoint.objects.create(url=receiver_url, tenant="acme")
    with transaction.atomic():
        order = Order.objects.create(account="acme", total=Decimal("12.50"))
    with transaction.atomic():
        event = publish("shop.ping", {"from": "host code"}, tenant="acme")

    # The admin shows the webhook screens.
    admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(admin)
    pages = {
        path: client.get(path).status_code
        for path in ("/admin/", "/admin/endpoints/endpoint/", "/admin/deliveries/delivery/", "/admin/deliveries/event/")
    }
    # A customer of the shop reads its events through the webhooks API (WEBHOOKS_API_TENANT).
    customer = Client()
    customer.force_login(get_user_model().objects.create_user("alice", password="pw"))
    listed = customer.get("/api/webhooks/events/")
    api = {
        "events": listed.status_code,
        "event_types": [event["type"] for event in listed.json()["data"]] if listed.status_code == 200 else [],
        "schema": customer.get("/api/webhooks/schema/").status_code,
    }
    print(
        json.dumps(
            {
                "secret": endpoint.secret,
                "order": order.pk,
                "event": event.webhook_id,
                "admin": pages,
                "admin_lists_endpoint": receiver_url in client.get("/admin/endpoints/endpoint/").content.decode(),
                "api": api,
                "packages": [deliveries.__file__, endpoints.__file__],
            }
        )
    )
