"""The leak review: secrets, signatures and credentials in custom headers never appear in logs,
exception messages, attempt records or admin pages, even when the receiver echoes them back.

One full delivery with failures (a real worker, a loopback receiver answering 500 then 200
and echoing every request header in its body and headers) is searched everywhere it leaves
a trace.
"""

import json
import logging
import secrets as random_secrets

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse

from deliveries import publish
from deliveries.models import DeliveryAttempt, DeliveryStatus
from endpoints.models import Endpoint, EndpointSecret, SignatureScheme
from tests.conftest import wait_until

# Our LOGGING stops `deliveries` and `endpoints` at their own handler (propagate False), so
# each logger is watched directly; the root catches urllib3, requests_hardened, kombu, django.
WATCHED_LOGGERS = ("", "deliveries", "endpoints", "celery", "kombu", "urllib3", "requests_hardened", "django")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # with the traceback, if any


@pytest.fixture
def every_log_line():
    handler = _Collect()
    saved = []
    for name in WATCHED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler.lines
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


def echo(status: int):
    """A scripted answer that sends every request header back, in the body and in a header,
    as a debugging receiver or an error page might."""

    def answer(handler) -> None:
        seen = dict(handler.headers.items())
        body = json.dumps({"you sent": seen}).encode()
        handler.send_response(status)
        handler.send_header("X-Echo", " | ".join(seen.values()))
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def signature_values(request) -> set[str]:
    """Every signature the receiver saw, whole and piece by piece."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    values = set()
    if "webhook-signature" in headers:
        value = headers["webhook-signature"]
        values.add(value)
        for entry in value.split(" "):
            values.update({entry, entry.partition(",")[2]})
    if "x-webhook-signature" in headers:
        value = headers["x-webhook-signature"]
        values.add(value)
        values.update(part.partition("=")[2] for part in value.split(",") if part.startswith("v1="))
    return values


def found(needles: set[str], haystack: str) -> list[str]:
    return sorted(needle for needle in needles if needle in haystack)


def raw_rows(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # our own fixed table names
        return repr(cursor.fetchall())


def admin_pages(client) -> dict[str, str]:
    """Every changelist and change page of our apps' admin, as a superuser sees them."""
    pages = {}
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        if meta.app_label not in ("endpoints", "deliveries"):
            continue
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        pages[url] = client.get(url)
        for pk in model_admin.get_queryset(None).values_list("pk", flat=True)[:20]:
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[pk])
            pages[url] = client.get(url)
    assert {url: response.status_code for url, response in pages.items()} == dict.fromkeys(pages, 200)
    return {url: response.content.decode() for url, response in pages.items()}


@pytest.mark.django_db(transaction=True)
def test_no_secret_signature_or_credential_leaks_from_a_delivery_with_failures(
    celery_worker, receiver, every_log_line, settings, client
):
    # Given two endpoints, one per signature scheme, each with a bearer token and a credential
    # in a header marked sensitive, and the first in the middle of a secret rotation
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.2,0.2,0.2"
    bearer = "tok_" + random_secrets.token_urlsafe(24)
    credential = random_secrets.token_urlsafe(24)
    headers = {"Authorization": f"Bearer {bearer}", "X-Partner-Credential": credential, "X-Team": "payments"}
    standard = Endpoint.objects.create(
        url=receiver.url("/standard"), headers=headers, sensitive_headers=["x-partner-credential"]
    )
    rotated_out = standard.secret
    standard.rotate_secret()
    hexed = Endpoint.objects.create(
        url=receiver.url("/hex"),
        headers=headers,
        sensitive_headers=["X-Partner-Credential"],
        signature_scheme=SignatureScheme.TIMESTAMPED_HEX,
    )
    for path in ("/standard", "/hex"):
        receiver.script(path, [echo(500), echo(200)])

    # When an event is published and delivered after one failure per endpoint
    event = publish("order.paid", {"order": 42})
    wait_until(lambda: event.deliveries.filter(status=DeliveryStatus.SUCCEEDED).count() == 2, timeout=20)
    assert DeliveryAttempt.objects.count() == 4

    plain = [rotated_out, *standard.live_secrets(), *hexed.live_secrets()]
    secret_values = {*plain, *(s.removeprefix("whsec_") for s in plain)}
    requests = receiver.received()
    assert len(requests) == 4 and all(signature_values(r) for r in requests)  # every request was signed
    signatures = set().union(*(signature_values(r) for r in requests))
    credentials = {bearer, credential}
    everything = secret_values | signatures | credentials

    # Then no log line has any of them
    logs = "\n".join(every_log_line)
    assert "webhook attempt event=" in logs  # the per-attempt line was captured
    assert found(everything, logs) == []

    # nor any attempt record, in any field (the receiver's echo included), nor a delivery row
    attempts = json.dumps(list(DeliveryAttempt.objects.values()), default=str)
    assert "[redacted]" in attempts and "payments" in attempts  # redacted, not dropped
    assert found(everything, attempts) == []
    assert found(everything, raw_rows("deliveries_deliveryattempt")) == []
    assert found(everything, raw_rows("deliveries_delivery")) == []

    # nor the stored secret rows, nor how a secret row prints
    assert found(secret_values, raw_rows("endpoints_endpointsecret")) == []
    assert found(secret_values | credentials, raw_rows("endpoints_endpoint")) == []
    rows = EndpointSecret.objects.all()
    assert found(secret_values, " ".join(f"{row} {row!r}" for row in rows)) == []

    # nor any admin page: lists and change pages of endpoints, deliveries, events and the rest
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    pages = admin_pages(client)
    for url, html in pages.items():
        # A sensitive header's value is shown nowhere, not even on the endpoint's own edit form.
        assert found(everything, html) == [], url


@pytest.mark.django_db
def test_error_messages_about_secrets_and_headers_never_quote_the_values():
    # Given values that are almost valid, each with a recognisable marker
    marker = "LEAKMARKER" + random_secrets.token_hex(8)
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    cases = [
        lambda: Endpoint.objects.create(url="https://example.com/hook", secret=f"whsec_{marker}!"),
        lambda: Endpoint.objects.create(url="https://example.com/hook", secret=f"{marker}"),
        lambda: endpoint.rotate_secret(new_secret=f"whsec_{marker}"),
        lambda: Endpoint.objects.create(url="https://example.com/hook", headers={"Authorization": f"{marker}\r\n"}),
        lambda: Endpoint.objects.create(url="https://example.com/hook", headers={"Authorization": marker * 100}),
        lambda: Endpoint.objects.create(url="https://example.com/hook", headers={"X-Key": f"{marker}é"}),
    ]
    for make in cases:
        # When each is refused
        with pytest.raises(ValidationError) as raised:
            make()
        # Then the message says what is wrong without repeating the value
        assert marker not in str(raised.value)
        assert marker not in repr(raised.value.__dict__)
