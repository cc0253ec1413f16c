"""The SSRF guard: with private networks refused, no webhook reaches loopback, whichever way
the address is written, neither at save time nor at send time. Traffic only ever goes to
127.0.0.1; the classification tests only call the functions, they connect nowhere."""

import ipaddress

import pytest
from django.core.exceptions import ValidationError

from deliveries import publish
from deliveries.models import DeliveryStatus
from endpoints.models import Endpoint, EndpointSecret
from endpoints.network_policy import blocked_reason, host_blocked_reason, parse_ip_literal
from endpoints.validation import validate_webhook_url
from tests.conftest import wait_until

# The loopback receiver's address, written four ways: dotted, by name, IPv4-mapped IPv6, decimal.
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433"]


def loopback_url(receiver, host: str) -> str:
    return f"http://{host}:{receiver.port}/hook"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_endpoint_on_loopback_is_refused_at_save(receiver, settings, host):
    # Given the guard is on
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False

    # When an endpoint is created with a loopback URL
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url=loopback_url(receiver, host))

    # Then it is refused, saying why, and nothing is written
    [message] = raised.value.message_dict["url"]
    assert "loopback address" in message
    assert "WEBHOOKS_ALLOW_PRIVATE_NETWORKS" in message
    assert Endpoint.objects.count() == 0
    assert EndpointSecret.objects.count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_send_to_loopback_is_refused_before_connecting(celery_worker, receiver, settings, host):
    # Given an endpoint on the loopback receiver, saved while private networks were allowed
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOKS_RETRY_SCHEDULE = "0.5,0.5"
    url = loopback_url(receiver, host)
    Endpoint.objects.create(url=url)

    # When the guard is turned on and an event is published
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    event = publish("order.paid", {"order": 1})

    # Then the delivery fails at once with BlockedAddress, and the receiver hears nothing
    def failed():
        delivery = event.deliveries.first()
        return delivery if delivery is not None and delivery.status != DeliveryStatus.PENDING else None

    delivery = wait_until(failed, timeout=10)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == 1
    assert delivery.next_attempt_at is None
    assert delivery.last_status_code is None
    [attempt] = delivery.attempts.all()
    assert (attempt.response_status, attempt.error_class, attempt.outcome) == (None, "BlockedAddress", "failed")
    assert attempt.error_message.startswith(f"refused to connect: {url} resolves to a non-public address")
    assert delivery.last_error == f"BlockedAddress: {attempt.error_message}"
    assert receiver.received() == []


def test_decimal_ipv4_url_is_refused_by_url_validation(settings):
    # Given the guard is on
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False

    # When a URL names its host as the decimal 2130706433, which resolvers read as 127.0.0.1
    # Then URL validation reads it the same way and refuses it
    assert parse_ip_literal("2130706433") == ipaddress.IPv4Address("127.0.0.1")
    with pytest.raises(ValidationError, match="'2130706433' is a loopback address"):
        validate_webhook_url("http://2130706433:8080/hook")


BLOCKED = {
    "10.0.0.1": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "100.64.0.1": "special-purpose",
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    "0.0.0.0": "unspecified",
    "::1": "loopback",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "::ffff:10.0.0.1": "IPv4-mapped private",
    "0177.0.0.1": "loopback",
    "0x7f000001": "loopback",
    "127.1": "loopback",
}
ALLOWED = ["93.184.216.34", "2606:4700::1111"]


@pytest.mark.parametrize(("host", "reason"), BLOCKED.items())
def test_internal_address_is_blocked(host, reason):
    # Given an internal address, in whatever notation a resolver accepts
    # When its host is classified
    # Then it is blocked, with the reason
    assert host_blocked_reason(host) == reason
    ip = parse_ip_literal(host)
    assert ip is not None
    assert blocked_reason(ip) == reason


@pytest.mark.parametrize("host", ALLOWED)
def test_public_address_is_allowed(host):
    # Given a globally routable address
    # When it is classified
    # Then nothing blocks it
    assert host_blocked_reason(host) is None
    assert blocked_reason(ipaddress.ip_address(host)) is None


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "LOCALHOST", "localhost.", "api.localhost"])
def test_bracketed_and_named_loopback_hosts_are_blocked(host):
    # Given a loopback host as it appears in a URL (brackets, case, trailing dot, subdomain)
    # When it is classified
    # Then it is loopback
    assert host_blocked_reason(host) in ("loopback", "IPv4-mapped loopback")
