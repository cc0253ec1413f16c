"""Transport policy: https only in production, allowed ports, the policy and the SSRF guard
applied again at every send, verified TLS certificates, and mTLS client certificates.

Every connection goes to a listener on 127.0.0.1. Tests that need a public-looking host name
install a fake resolver: the name resolves to a public address (or, later, to loopback), and
connections to that public address are routed to the loopback listener, so nothing ever
leaves the machine. Sends run in this process (`send_delivery`), where the fake applies.
"""

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection

from deliveries import publish
from deliveries.fanout import fan_out
from deliveries.models import DeliveryAttempt, DeliveryStatus
from deliveries.sending import send_delivery
from endpoints.models import Endpoint, EndpointClientCertificate
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db

HOST_NAME = "hooks.example.test"
# A public address that is never contacted: the fake resolver routes connections to it to
# 127.0.0.1, standing in for "the receiver's server on the internet".
PUBLIC_IP = "93.184.216.34"
NEW_KEY = "dGhpcyBpcyBhIHRlc3Qga2V5OiAzMiBieXRlcyEhISE="


# --- certificates, made per test with `cryptography` -------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key, password: bytes | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


@dataclass
class Issued:
    cert_pem: str
    key_pem: str
    key: object


class CertificateAuthority:
    """A throw-away CA that issues server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = _pem(self.cert)

    def issue(
        self,
        common_name: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        client: bool = False,
        valid: tuple[timedelta, timedelta] = (timedelta(minutes=-5), timedelta(days=1)),
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + valid[0])
            .not_valid_after(now + valid[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(_pem(builder.sign(self.key, hashes.SHA256())), _key_pem(key), key)


class TLSReceiver(Receiver):
    """The test receiver behind TLS; optionally requiring a client certificate from `client_ca`."""

    def __init__(self, server: Issued, directory: Path, client_ca: CertificateAuthority | None = None) -> None:
        super().__init__()
        (directory / "server.pem").write_text(server.cert_pem)
        (directory / "server.key").write_text(server.key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=client_ca.pem)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    def https_url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"https://{host}:{self.port}{path}"


@pytest.fixture
def tls_receivers():
    started: list[TLSReceiver] = []

    def start(*args, **kwargs) -> TLSReceiver:
        receiver = TLSReceiver(*args, **kwargs).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def server_ca(tmp_path) -> CertificateAuthority:
    ca = CertificateAuthority("webhooks test server CA")
    (tmp_path / "ca.pem").write_text(ca.pem)
    return ca


class FakeDNS:
    """A resolver override: `records[name] = ip`. The public PUBLIC_IP connects to 127.0.0.1;
    any name not in `records` does not resolve. Nothing reaches another machine."""

    def __init__(self, monkeypatch) -> None:
        self.records: dict[str, str] = {}
        self.lookups: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            host = host.decode() if isinstance(host, bytes) else host
            self.lookups.append(host)
            if host in ("127.0.0.1", "localhost"):
                return real(host, port, family, type, proto, flags)
            address = "127.0.0.1" if host == PUBLIC_IP else self.records.get(host)
            if address is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 0)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def fake_dns(monkeypatch) -> FakeDNS:
    return FakeDNS(monkeypatch)


@pytest.fixture
def production(settings, tmp_path, server_ca):
    """Production transport settings: SSRF guard on, https only, our test CA trusted."""
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    settings.WEBHOOKS_ALLOW_HTTP = False
    settings.WEBHOOKS_CA_BUNDLE = str(tmp_path / "ca.pem")
    return settings


def send_one(endpoint: Endpoint, order: int = 1) -> DeliveryAttempt:
    """Publish an event for `endpoint`'s tenant and make one attempt, in this process."""
    event = publish("order.paid", {"order": order}, tenant=endpoint.tenant)
    [delivery_id] = fan_out(str(event.id))
    send_delivery(delivery_id)
    return DeliveryAttempt.objects.select_related("delivery").get(delivery_id=delivery_id)


def ok_recording_peer(peers: list):
    """A scripted answer: 200, after noting the client certificate the receiver was shown."""

    def answer(handler) -> None:
        peers.append(handler.connection.getpeercert())
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    return answer


# --- scheme and ports ------------------------------------------------------------------------


def test_production_settings_refuse_http_endpoints_and_accept_https(settings):
    # Given production's policy (DEBUG off: WEBHOOKS_ALLOW_HTTP defaults to off)
    settings.WEBHOOKS_ALLOW_HTTP = False

    # When an http endpoint is created, it is refused and nothing is written
    with pytest.raises(ValidationError) as raised:
        Endpoint.objects.create(url="http://example.com/hook")
    assert raised.value.message_dict["url"] == [
        "URL must use https: plain http is refused outside DEBUG (WEBHOOKS_ALLOW_HTTP)."
    ]
    assert Endpoint.objects.count() == 0

    # And https is accepted, on any port
    Endpoint.objects.create(url="https://example.com/hook")
    Endpoint.objects.create(url="https://example.com:8443/hook")


def test_allowed_ports_narrow_the_ports_an_endpoint_may_use(settings):
    # Given WEBHOOKS_ALLOWED_PORTS=443,8443
    settings.WEBHOOKS_ALLOWED_PORTS = [443, 8443]

    # Then the implicit https port and the listed ones are accepted
    Endpoint.objects.create(url="https://example.com/hook")
    Endpoint.objects.create(url="https://example.com:8443/hook")

    # and any other port is refused, naming the allowed ones
    for url in ("https://example.com:22/hook", "http://example.com/hook"):
        with pytest.raises(ValidationError) as raised:
            Endpoint.objects.create(url=url)
        [message] = raised.value.message_dict["url"]
        assert "is not allowed; allowed ports: 443, 8443 (WEBHOOKS_ALLOWED_PORTS)" in message
    assert Endpoint.objects.count() == 2


@pytest.mark.parametrize("tightened", ["https_only", "ports"])
def test_a_url_refused_by_policy_at_send_time_fails_the_attempt_without_connecting(receiver, settings, tightened):
    # Given an endpoint saved while the policy allowed it
    endpoint = Endpoint.objects.create(url=receiver.url("/hook"))

    # When the policy is tightened afterwards (https only, or a port list)
    if tightened == "https_only":
        settings.WEBHOOKS_ALLOW_HTTP = False
    else:
        settings.WEBHOOKS_ALLOWED_PORTS = [443]
    attempt = send_one(endpoint)

    # Then the attempt fails at once with a clear error, the delivery is failed (another try
    # cannot help), and no connection was made
    assert (attempt.error_class, attempt.response_status, attempt.outcome) == ("RefusedURL", None, "failed")
    assert attempt.error_message.startswith("URL refused by the transport policy at send time: URL ")
    assert attempt.delivery.status == DeliveryStatus.FAILED
    assert attempt.delivery.last_error == f"RefusedURL: {attempt.error_message}"
    assert receiver.received() == []


# --- the SSRF guard at every send ------------------------------------------------------------


def test_hostname_resolving_to_loopback_is_refused_at_send_time_although_accepted_when_saved(
    production, fake_dns, server_ca, tls_receivers, tmp_path
):
    # Given a receiver known by a public host name (resolving to a public address), and an
    # endpoint for it saved under production's policy
    fake_dns.records[HOST_NAME] = PUBLIC_IP
    receiver = tls_receivers(server_ca.issue(HOST_NAME, dns=(HOST_NAME,)), tmp_path)
    endpoint = Endpoint.objects.create(url=receiver.https_url(HOST_NAME))

    # When a first event is sent, it is delivered (over verified TLS)
    first = send_one(endpoint, order=1)
    assert (first.response_status, first.error_class) == (200, "")
    assert len(receiver.received()) == 1

    # And when the name's DNS record changes to loopback after the endpoint was saved
    fake_dns.records[HOST_NAME] = "127.0.0.1"
    lookups_before = fake_dns.lookups.count(HOST_NAME)
    second = send_one(endpoint, order=2)

    # Then the send resolved the name again, refused the address and connected nowhere: the
    # listener received nothing more
    assert fake_dns.lookups.count(HOST_NAME) > lookups_before
    assert (second.error_class, second.response_status, second.outcome) == ("BlockedAddress", None, "failed")
    assert second.error_message.startswith(f"refused to connect: {endpoint.url} resolves to a non-public address")
    assert second.delivery.status == DeliveryStatus.FAILED
    assert len(receiver.received()) == 1


# --- TLS verification ------------------------------------------------------------------------


def test_an_untrusted_receiver_certificate_fails_the_attempt_and_delivers_nothing(server_ca, tls_receivers, tmp_path):
    # Given a receiver whose certificate comes from a CA nobody trusts (certifi's bundle is used)
    receiver = tls_receivers(server_ca.issue("127.0.0.1", ips=("127.0.0.1",)), tmp_path)
    endpoint = Endpoint.objects.create(url=receiver.https_url())

    # When an event is sent
    attempt = send_one(endpoint)

    # Then the handshake fails: an SSLError attempt, retried later, and nothing delivered
    assert (attempt.error_class, attempt.response_status) == ("SSLError", None)
    assert "certificate verify failed" in attempt.error_message
    assert attempt.delivery.status == DeliveryStatus.PENDING
    assert receiver.received() == []


def test_a_certificate_for_another_host_name_fails_even_from_a_trusted_ca(settings, server_ca, tls_receivers, tmp_path):
    # Given a trusted CA, but a receiver certificate made out to another name
    settings.WEBHOOKS_CA_BUNDLE = str(tmp_path / "ca.pem")
    receiver = tls_receivers(server_ca.issue("other.example", dns=("other.example",)), tmp_path)
    endpoint = Endpoint.objects.create(url=receiver.https_url())

    # When an event is sent, the host name check refuses it
    attempt = send_one(endpoint)
    assert attempt.error_class == "SSLError"
    assert "127.0.0.1" in attempt.error_message
    assert receiver.received() == []


def test_a_private_ca_in_the_ca_bundle_setting_verifies_the_receiver(settings, server_ca, tls_receivers, tmp_path):
    # Given WEBHOOKS_CA_BUNDLE naming the CA that signed the receiver's certificate
    settings.WEBHOOKS_CA_BUNDLE = str(tmp_path / "ca.pem")
    receiver = tls_receivers(server_ca.issue("127.0.0.1", ips=("127.0.0.1",)), tmp_path)
    endpoint = Endpoint.objects.create(url=receiver.https_url())

    # When an event is sent, it is delivered
    attempt = send_one(endpoint)
    assert (attempt.response_status, attempt.delivery.status) == (200, DeliveryStatus.SUCCEEDED)
    assert len(receiver.received()) == 1


# --- mTLS client certificates ----------------------------------------------------------------


@pytest.mark.parametrize("guard", ["production", "private_networks"])
def test_an_endpoint_presents_its_client_certificate_to_a_receiver_that_requires_one(
    request, settings, server_ca, tls_receivers, tmp_path, guard
):
    # Given a receiver that requires a client certificate from its own CA, reached through the
    # SSRF guard (production, via the fake resolver) or directly on 127.0.0.1
    settings.WEBHOOKS_CA_BUNDLE = str(tmp_path / "ca.pem")
    client_ca = CertificateAuthority("receiver's client CA")
    if guard == "production":
        request.getfixturevalue("production")
        request.getfixturevalue("fake_dns").records[HOST_NAME] = PUBLIC_IP
        host, server = HOST_NAME, server_ca.issue(HOST_NAME, dns=(HOST_NAME,))
    else:
        host, server = "127.0.0.1", server_ca.issue("127.0.0.1", ips=("127.0.0.1",))
    receiver = tls_receivers(server, tmp_path, client_ca=client_ca)
    peers: list = []
    receiver.script("/hook", [ok_recording_peer(peers)])
    endpoint = Endpoint.objects.create(url=receiver.https_url(host))

    # When the endpoint has no client certificate, the receiver refuses the handshake
    refused = send_one(endpoint, order=1)
    assert refused.response_status is None
    assert refused.error_class in ("SSLError", "ConnectionError", "ProtocolError")
    assert receiver.received() == []

    # And with the certificate the receiver's CA issued, the event is delivered
    client = client_ca.issue("webhooks sender", client=True)
    endpoint.set_client_certificate(client.cert_pem, client.key_pem)
    endpoint = Endpoint.objects.get(pk=endpoint.pk)
    delivered = send_one(endpoint, order=2)
    assert (delivered.response_status, delivered.error_class) == (200, "")
    [peer] = peers
    assert dict(item[0] for item in peer["subject"]) == {"commonName": "webhooks sender"}


def test_client_key_is_stored_encrypted_and_reencrypted_with_the_secrets(settings):
    # Given an endpoint with a client certificate
    ca = CertificateAuthority("client CA")
    client = ca.issue("webhooks sender", client=True)
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    stored = endpoint.set_client_certificate(client.cert_pem, client.key_pem)

    # Then its row holds the certificate (public) but not the key
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM endpoints_endpointclientcertificate WHERE id = %s", [stored.pk])
        row = repr(cursor.fetchone())
    key_body = "".join(client.key_pem.splitlines()[1:-1])
    assert key_body[:40] not in row and key_body[-40:] not in row
    assert EndpointClientCertificate.objects.get().private_key_pem == client.key_pem
    assert stored.subject == "CN=webhooks sender"
    assert len(stored.fingerprint_sha256) == 64

    # And the key moves to a new encryption key with the secrets
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY, *settings.WEBHOOKS_SECRET_KEYS]
    out = StringIO()
    call_command("reencrypt_secrets", stdout=out)
    assert "client certificate keys: 1 re-encrypted" in out.getvalue()
    settings.WEBHOOKS_SECRET_KEYS = [NEW_KEY]
    assert EndpointClientCertificate.objects.get().private_key_pem == client.key_pem


def test_a_client_certificate_that_cannot_work_is_refused_when_saved():
    ca = CertificateAuthority("client CA")
    client = ca.issue("webhooks sender", client=True)
    other = ca.issue("someone else", client=True)
    expired = ca.issue("expired", client=True, valid=(timedelta(days=-10), timedelta(days=-1)))
    endpoint = Endpoint.objects.create(url="https://example.com/hook")
    cases = [
        (client.cert_pem, other.key_pem, "does not belong to the certificate"),
        (expired.cert_pem, expired.key_pem, "expired on"),
        (client.cert_pem, _key_pem(client.key, password=b"pw"), "protected by a passphrase"),
        ("not a certificate", client.key_pem, "not a PEM certificate chain"),
        (client.cert_pem, "not a key", "not a PEM private key"),
    ]
    for cert_pem, key_pem, message in cases:
        with pytest.raises(ValidationError, match=message) as raised:
            endpoint.set_client_certificate(cert_pem, key_pem)
        key_lines = key_pem.splitlines()[1:-1]
        assert not any(line in str(raised.value) for line in key_lines)
    assert EndpointClientCertificate.objects.count() == 0
