"""The SSRF guard: with private networks refused, no webhook reaches loopback, whichever way
the address is written, neither at save time nor at send time, nor through a host name that
resolves to an internal address. Traffic only ever goes to 127.0.0.1: the classification tests
only call the functions, and the resolver tests run on a stand-in network that sends every
connection to the loopback receiver."""

import ipaddress
import socket

import pytest
from django.core.exceptions import ValidationError

from deliveries import publish
from deliveries.fanout import fan_out
from deliveries.models import DeliveryAttempt, DeliveryStatus
from deliveries.sending import send_delivery
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
    "::ffff:169.254.169.254": "IPv4-mapped link-local",
    "0177.0.0.1": "loopback",
    "0x7f000001": "loopback",
    "127.1": "loopback",
    # IPv6 forms embedding an IPv4 address: named with what they embed, refused whatever it is
    "::7f00:1": "IPv4-compatible loopback",
    "::a9fe:a9fe": "IPv4-compatible link-local",
    "::808:808": "IPv4-compatible",
    "::ffff:0:7f00:1": "IPv4-translated loopback",
    "::ffff:0:808:808": "IPv4-translated",
    "64:ff9b::a00:1": "NAT64 private",
    "64:ff9b::a9fe:a9fe": "NAT64 link-local",
    "64:ff9b::808:808": "NAT64",
    "64:ff9b:1::a00:1": "NAT64",
    "2002:7f00:1::": "6to4 loopback",
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "Teredo loopback",
    # site-local, unique-local, documentation, and addresses with a zone index
    "fec0::1": "site-local",
    "fd12:3456::1": "private",
    "192.0.2.1": "documentation",
    "198.51.100.7": "documentation",
    "203.0.113.9": "documentation",
    "2001:db8::1": "documentation",
    "3fff::1": "documentation",
    "fe80::1%eth0": "link-local",
    "fec0::1%eth0": "site-local",
    "2606:4700::1111%eth0": "scoped",
}
ALLOWED = ["93.184.216.34", "2606:4700::1111", "2a00:1450:4001::1"]


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


# --- at connect time: every address a name resolves to, through the same classifier ----------

HOST_NAME = "hooks.example.test"
PUBLIC_IP = "93.184.216.34"
PUBLIC_IPV6 = "2606:4700::1111"


class StandInNetwork:
    """The test's whole network, in this process. The resolver answers `answers` for HOST_NAME
    (other names resolve as usual); every TCP connection opened meanwhile is noted and then
    made to 127.0.0.1 on the same port, whatever address it was for. So nothing leaves the
    machine, and an address the guard lets through, public or internal, reaches the loopback
    receiver, as a send would reach a host inside the network."""

    def __init__(self, monkeypatch) -> None:
        self.answers: list[str] = []
        self.lookups = 0
        self.connections: list[str] = []
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            if host != HOST_NAME:
                return real_getaddrinfo(host, port, family, type, proto, flags)
            self.lookups += 1
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port or 0, 0, 0))
                if ":" in ip
                else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port or 0))
                for ip in self.answers
            ]

        def connect(sock, address):
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return real_connect(sock, address)
            self.connections.append(address[0])
            loopback = "127.0.0.1" if sock.family == socket.AF_INET else "::ffff:127.0.0.1"
            return real_connect(sock, (loopback, *address[1:]))

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def network(monkeypatch) -> StandInNetwork:
    return StandInNetwork(monkeypatch)


@pytest.fixture
def accepted(monkeypatch, receiver) -> list:
    """The peers of every connection the receiver accepts."""
    peers: list = []
    server = receiver._server
    accept = server.get_request

    def get_request():
        connection, peer = accept()
        peers.append(peer)
        return connection, peer

    monkeypatch.setattr(server, "get_request", get_request)
    return peers


def send_one(endpoint: Endpoint) -> DeliveryAttempt:
    """Publish an event for `endpoint` and make one attempt, in this process (where the
    stand-in network applies)."""
    event = publish("order.paid", {"order": 1}, tenant=endpoint.tenant)
    [delivery_id] = fan_out(str(event.id))
    send_delivery(delivery_id)
    return DeliveryAttempt.objects.select_related("delivery").get(delivery_id=delivery_id)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answers", "refused"),
    [
        (["::7f00:1"], "::7f00:1, an IPv4-compatible loopback address"),
        (["::a9fe:a9fe"], "::a9fe:a9fe, an IPv4-compatible link-local address"),
        (["::ffff:0:7f00:1"], "::ffff:0:7f00:1, an IPv4-translated loopback address"),
        (["fec0::1"], "fec0::1, a site-local address"),
        (["::ffff:127.0.0.1"], "::ffff:127.0.0.1, an IPv4-mapped loopback address"),
        (["127.0.0.1"], "127.0.0.1, a loopback address"),
        ([PUBLIC_IP, "127.0.0.1"], "127.0.0.1, a loopback address"),
        ([PUBLIC_IPV6, "::7f00:1"], "::7f00:1, an IPv4-compatible loopback address"),
    ],
    ids=[
        "ipv4-compatible-loopback",
        "ipv4-compatible-metadata",
        "ipv4-translated-loopback",
        "site-local",
        "ipv4-mapped-loopback",
        "loopback",
        "public-then-loopback",
        "public-then-ipv4-compatible",
    ],
)
def test_a_name_resolving_to_any_internal_address_is_refused_without_connecting(
    settings, receiver, network, accepted, answers, refused
):
    # Given the guard on, and an endpoint whose host name is not visibly internal
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    endpoint = Endpoint.objects.create(url=f"http://{HOST_NAME}:{receiver.port}/hook")

    # When the name resolves to these addresses (alone, or among public ones) at send time
    network.answers = answers
    attempt = send_one(endpoint)

    # Then the attempt is refused as a blocked address, naming it, after one lookup; no
    # connection was even attempted, and the loopback receiver accepted none
    assert (attempt.error_class, attempt.response_status, attempt.outcome) == ("BlockedAddress", None, "failed")
    assert attempt.error_message == (
        f"refused to connect: {endpoint.url} resolves to a non-public address ({HOST_NAME} resolves to {refused})"
    )
    assert attempt.delivery.status == DeliveryStatus.FAILED
    assert network.lookups == 1
    assert network.connections == []
    assert accepted == []
    assert receiver.received() == []


@pytest.mark.django_db
@pytest.mark.parametrize("public_ip", [PUBLIC_IP, PUBLIC_IPV6])
def test_a_name_resolving_to_public_addresses_is_sent_to_the_checked_address(
    settings, receiver, network, accepted, public_ip
):
    # Given the guard on, and a name that resolves to a public address only
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    endpoint = Endpoint.objects.create(url=f"http://{HOST_NAME}:{receiver.port}/hook")
    network.answers = [public_ip]

    # When an event is sent
    attempt = send_one(endpoint)

    # Then it is delivered over one connection to exactly the address checked, after a single
    # lookup (no second resolution between the check and the connection), and the receiver
    # sees its own name in the Host header
    assert (attempt.response_status, attempt.error_class) == (200, "")
    assert network.lookups == 1
    assert network.connections == [public_ip]
    assert len(accepted) == 1
    [request] = receiver.received()
    assert request.headers["Host"] == f"{HOST_NAME}:{receiver.port}"
