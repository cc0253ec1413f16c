"""What the HTTP client refuses at send time is refused when the endpoint is saved.

An endpoint the client cannot send to would fail every attempt for the whole retry schedule
(about three days). Each input below once saved without error; the control tests show the real
`requests` refusing it at send, without any connection leaving the machine.
"""

import pytest
import requests
from django.core.exceptions import ValidationError
from urllib3.exceptions import LocationParseError
from urllib3.util import SKIP_HEADER

from deliveries import publish
from deliveries.fanout import fan_out
from deliveries.models import DeliveryAttempt, DeliveryStatus
from deliveries.sending import send_delivery
from endpoints.models import Endpoint, EndpointSecret

pytestmark = pytest.mark.django_db

# "localhost" in full-width letters, and 127.0.0.1 with ideographic full stops (U+3002).
FULL_WIDTH_LOCALHOST = "".join(chr(ord(c) + 0xFEE0) for c in "localhost")
IDEOGRAPHIC_LOOPBACK = "\u3002".join(["127", "0", "0", "1"])
# A host name of 1,931 characters in labels of at most 63: only its length is wrong.
LONG_HOST = ".".join(["a" * 63] * 30) + ".abc.example"
IDNA_MESSAGE = "is not a valid internationalised host name (IDNA 2008"
WHITESPACE_MESSAGE = "Header 'X-Tenant' must not start or end with a space or tab."

REFUSED_HOSTS = {
    "full-width localhost": (FULL_WIDTH_LOCALHOST, IDNA_MESSAGE),
    "ideographic full stops": (IDEOGRAPHIC_LOOPBACK, IDNA_MESSAGE),
    "1931 characters": (
        LONG_HOST,
        "URL host is 1931 characters long as sent (IDNA-encoded); a host name has at most 253.",
    ),
    "label of 64": ("a" * 64 + ".example", "each dot-separated part must have 1 to 63 characters"),
    "wildcard": ("*.example.com", "is not one the HTTP client can send to"),
    "brace": ("ex{ample.com", "is not one the HTTP client can send to"),
}
REFUSED_HEADERS = {
    "leading space": (" acme", WHITESPACE_MESSAGE),
    "leading tab": ("\tacme", WHITESPACE_MESSAGE),
    "trailing space": ("acme ", WHITESPACE_MESSAGE),
    "urllib3's skip marker": (SKIP_HEADER, "Header 'X-Tenant' has a value reserved by the HTTP client."),
}


def test_the_long_host_is_as_long_as_in_the_finding():
    assert len(LONG_HOST) == 1931
    assert max(map(len, LONG_HOST.split("."))) == 63


@pytest.mark.parametrize(("host", "message"), REFUSED_HOSTS.values(), ids=REFUSED_HOSTS.keys())
def test_a_host_the_client_cannot_send_to_is_refused_at_save(host, message):
    # When an endpoint is created with a host the HTTP client refuses or cannot resolve
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url=f"http://{host}:8080/hook")

    # Then it is refused, saying why, and nothing is written
    [error] = raised.value.message_dict["url"]
    assert message in error
    assert Endpoint.objects.count() == 0
    assert EndpointSecret.objects.count() == 0


@pytest.mark.parametrize(("value", "message"), REFUSED_HEADERS.values(), ids=REFUSED_HEADERS.keys())
def test_a_header_value_the_client_refuses_is_refused_at_save(value, message):
    # When an endpoint is created with a header value the HTTP client refuses
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url="https://example.com/hook", headers={"X-Tenant": value})

    # Then it is refused, saying why, and nothing is written
    assert raised.value.message_dict["headers"] == [message]
    assert Endpoint.objects.count() == 0
    assert EndpointSecret.objects.count() == 0


@pytest.mark.parametrize("host", ["bücher.example", "BÜCHER.example", "faß.de", "例え.テスト", "xn--bcher-kva.example"])
def test_valid_internationalised_hosts_are_accepted(host):
    Endpoint.objects.create(url=f"https://{host}/hook")
    assert Endpoint.objects.count() == 1


def test_the_host_is_checked_as_the_client_will_send_it(settings):
    # Given the guard on
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False

    # When the host is written percent-encoded (the client decodes it and would ask for localhost)
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url="http://%6c%6f%63%61%6c%68%6f%73%74:8080/hook")

    # Then the decoded host is refused as loopback
    [error] = raised.value.message_dict["url"]
    assert "(sent as 'localhost') is a loopback address" in error
    assert Endpoint.objects.count() == 0


# --- controls: the real client refuses each of them at send ---------------------------------


UNSENDABLE = {name: host for name, (host, _) in REFUSED_HOSTS.items() if name != "brace"}


@pytest.mark.parametrize("host", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_control_the_http_client_fails_on_these_hosts(host):
    # Refused while parsing the URL, or before any query: urllib3 runs Python's IDNA codec on
    # the name (label lengths) and glibc refuses names over 255 octets without asking a server.
    session = requests.Session()
    session.trust_env = False
    with pytest.raises((requests.exceptions.InvalidURL, requests.ConnectionError, LocationParseError)):
        session.post(f"http://{host}:8080/hook", data=b"{}", timeout=2)


def test_control_the_http_client_would_look_up_a_percent_encoded_name():
    # Not sent (the lookup would leave the machine): the client's URL shows the name it would ask for.
    prepared = requests.PreparedRequest()
    prepared.prepare_url("http://ex{ample.com/hook", None)
    assert prepared.url == "http://ex%7Bample.com/hook"


@pytest.mark.parametrize("value", [" acme", "\tacme"], ids=["leading space", "leading tab"])
def test_control_the_http_client_fails_on_these_header_values(receiver, value):
    with pytest.raises(requests.exceptions.InvalidHeader):
        requests.post(receiver.url(), data=b"{}", headers={"X-Tenant": value}, timeout=2)
    assert receiver.received() == []


def _send_one(endpoint: Endpoint) -> DeliveryAttempt:
    event = publish("order.paid", {"order": 1}, tenant=endpoint.tenant)
    [delivery_id] = fan_out(str(event.id))
    send_delivery(delivery_id)
    return DeliveryAttempt.objects.select_related("delivery").get(delivery_id=delivery_id)


@pytest.mark.parametrize(
    ("url", "headers", "error_class"),
    [
        (f"http://{FULL_WIDTH_LOCALHOST}:{{port}}/hook", {}, "RefusedURL"),
        (f"http://{LONG_HOST}:{{port}}/hook", {}, "RefusedURL"),
        ("http://127.0.0.1:{port}/hook", {"X-Tenant": " acme"}, "InvalidHeader"),
    ],
    ids=["full-width localhost", "1931 characters", "leading space"],
)
def test_an_endpoint_saved_before_these_checks_fails_at_once_not_for_days(receiver, url, headers, error_class):
    # Given an endpoint stored before these checks existed (written past validation)
    endpoint = Endpoint.objects.create(url=receiver.url())
    Endpoint.objects.filter(pk=endpoint.pk).update(url=url.format(port=receiver.port), headers=headers)
    endpoint.refresh_from_db()

    # When an event is sent to it
    attempt = _send_one(endpoint)

    # Then the attempt fails without reaching the receiver, and is not retried: no later try
    # can succeed
    assert (attempt.error_class, attempt.response_status) == (error_class, None)
    assert attempt.delivery.status == DeliveryStatus.FAILED
    assert attempt.delivery.next_attempt_at is None
    assert receiver.received() == []
