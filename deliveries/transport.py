"""The HTTP call: one POST of signed bytes, bounded in time and size, to a checked address.

- One `requests` session per worker thread, so connections are kept alive between sends.
- SSRF guard: unless WEBHOOKS_ALLOW_PRIVATE_NETWORKS is on, the host is resolved at every new
  connection, every address is classified by the save-time policy (refused if any is
  loopback, private, link-local, reserved, IPv4-embedding...) and the connection goes to
  exactly the address checked, with no second DNS lookup to rebind (connect_guard.py).
- Policy at send time: the URL is validated again before every send (scheme, port, visibly
  internal hosts: endpoints/validation.py), so a policy tightened after an endpoint was saved
  applies to it; a URL that fails is a failed attempt without a connection.
- TLS: certificates are always verified (`verify=` WEBHOOKS_CA_BUNDLE or certifi's bundle),
  host names checked. An endpoint with a client certificate presents it (mTLS) through an
  SSLContext built once per thread and certificate; the key goes to OpenSSL through an
  anonymous in-memory file (memfd), never a file on disk.
- No redirects (a 3xx could point inside the network), no proxies or netrc from the
  environment (`trust_env=False`).
- Deadlines: connect timeout, then a total deadline over headers and body; every socket read
  waits at most for what is left of the deadline, and since a response trickled in a byte at
  a time never makes a read wait that long, a watchdog shuts the socket down shortly after
  the deadline (DEADLINE_GRACE): neither trickled headers nor a trickled body hold a worker.
- The response body is read up to WEBHOOKS_MAX_RESPONSE_BYTES and the rest is dropped.
"""

import contextlib
import heapq
import itertools
import os
import socket
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import requests
import urllib3
from django.core.exceptions import ValidationError
from requests.adapters import HTTPAdapter
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_ import create_urllib3_context

from endpoints.app_settings import webhook_settings
from endpoints.models import EndpointClientCertificate
from endpoints.validation import validate_webhook_url

from .connect_guard import GuardedAdapter

_local = threading.local()
CHUNK_SIZE = 4096
# The watchdog acts this long after the deadline, so that a plain read timeout, which fires
# at the deadline, keeps reporting as one (ReadTimeout) and the watchdog only cuts trickles.
DEADLINE_GRACE = 0.5
# Errors that another try cannot fix: the URL or its address is refused by policy, or the
# HTTP client refuses the request itself (an endpoint saved before a validation existed).
BLOCKED_ADDRESS = "BlockedAddress"
REFUSED_URL = "RefusedURL"
# The endpoint cannot sign in its format (deliveries/signing.py SigningError): nothing was sent.
SIGNING_ERROR = "SigningError"
NOT_RETRYABLE_ERRORS = frozenset({BLOCKED_ADDRESS, REFUSED_URL, SIGNING_ERROR, "InvalidURL", "InvalidHeader"})
# Client-certificate SSLContexts kept per thread (each holds a parsed key).
CLIENT_CONTEXTS_PER_THREAD = 32


class DeadlineExceeded(requests.Timeout):
    """The response did not complete within the total deadline."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool = False


@dataclass
class TransportError:
    error_class: str
    message: str


@dataclass
class Result:
    response: Response | None = None
    error: TransportError | None = None
    duration_ms: int = 0


@dataclass(eq=False)
class _Alarm:
    deadline: float
    sock: socket.socket
    cancelled: bool = False
    fired: bool = False


@dataclass
class _Watchdog:
    """One thread that shuts down the socket of every request still running at its deadline.

    Per-read socket timeouts cannot bound a response that trickles in a byte at a time (each
    read returns in time); shutting the socket down ends the blocked read at once.
    """

    _cond: threading.Condition = field(default_factory=threading.Condition)
    _heap: list[tuple[float, int, _Alarm]] = field(default_factory=list)
    _order: itertools.count = field(default_factory=itertools.count)
    _thread: threading.Thread | None = None

    def arm(self, deadline: float, sock: socket.socket) -> _Alarm:
        alarm = _Alarm(deadline, sock)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhooks-deadline", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._order), alarm))
            self._cond.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> None:
        with self._cond:
            alarm.cancelled = True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, alarm = heapq.heappop(self._heap)
                if alarm.cancelled:
                    continue
                alarm.fired = True
            try:
                # socket.socket's own shutdown: on a TLS socket it leaves the SSL object alone.
                socket.socket.shutdown(alarm.sock, socket.SHUT_RDWR)
            except (OSError, TypeError):
                pass


_watchdog = _Watchdog()


def _watch(sock: socket.socket | None) -> None:
    """Put `sock` under the deadline of the request this thread is making, once."""
    watched = getattr(_local, "watched", None)
    if sock is None or watched is None or any(alarm.sock is sock for alarm in watched):
        return
    watched.append(_watchdog.arm(_local.deadline + DEADLINE_GRACE, sock))


class _WatchedConnectionMixin:
    """Connections that put their socket under the current request's deadline when used."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(self.sock)

    def request(self, *args, **kwargs) -> None:
        _watch(self.sock)  # a kept-alive connection (a new one is watched from connect)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedConnectionMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _ClientCertificateMixin:
    """Adapters that use the current request's client-certificate SSLContext, if any.

    urllib3 keys its connection pools by SSLContext too, so connections made with one endpoint's
    client certificate are never reused for another endpoint.
    """

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)  # type: ignore[misc]
        context = getattr(_local, "client_context", None)
        if context is not None and host_params.get("scheme") == "https":
            pool_kwargs["ssl_context"] = context
        return host_params, pool_kwargs


class _GuardedAdapter(_ClientCertificateMixin, GuardedAdapter):
    """The SSRF guard: resolve, refuse if any address is non-public, pin the checked address."""


class _OpenAdapter(_ClientCertificateMixin, HTTPAdapter):
    """No address filter (WEBHOOKS_ALLOW_PRIVATE_NETWORKS: development and tests)."""


def _session(allow_private: bool) -> requests.Session:
    key = "private" if allow_private else "public"
    sessions = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(key)
    if session is None:
        config = Config(
            ip_filter_enable=False,  # our adapters below do it, with client certificates
            ip_filter_allow_loopback_ips=False,
            never_redirect=True,
            default_timeout=(webhook_settings.CONNECT_TIMEOUT, webhook_settings.REQUEST_TIMEOUT),
        )
        session = sessions[key] = HTTPSession(config)
        session.trust_env = False
        for scheme in ("http://", "https://"):
            if allow_private:
                session.mount(scheme, _OpenAdapter())
            else:
                session.mount(scheme, _GuardedAdapter(is_https_proto=scheme == "https://"))
        for adapter in session.adapters.values():
            adapter.poolmanager.pool_classes_by_scheme = {
                "http": _WatchedHTTPConnectionPool,
                "https": _WatchedHTTPSConnectionPool,
            }
    return session


def _set_read_timeout(raw, seconds: float) -> None:
    """Bound the next socket read of a streamed urllib3 response to `seconds`."""
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is None:
        fp = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _read_capped(response: requests.Response, deadline: float, cap: int) -> tuple[bytes, bool]:
    """Read up to `cap` bytes of the body before `deadline`; report whether more was left."""
    chunks: list[bytes] = []
    size = 0
    raw = response.raw
    while size <= cap:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("response body not complete within the total deadline")
        _set_read_timeout(raw, remaining)
        chunk = raw.read(CHUNK_SIZE, decode_content=True)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:cap], True


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read `data` from: an anonymous in-memory file where the system has
    them (Linux), else a 0600 temporary file removed at once."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("webhooks-client-certificate", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="webhooks-client-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        yield path
    finally:
        os.unlink(path)


def _client_context(certificate: EndpointClientCertificate) -> ssl.SSLContext:
    """An SSLContext presenting `certificate`, built once per thread and stored certificate."""
    contexts = getattr(_local, "client_contexts", None)
    if contexts is None:
        contexts = _local.client_contexts = OrderedDict()
    key = (certificate.pk, certificate.fingerprint_sha256, certificate.encrypted_private_key)
    context = contexts.get(key)
    if context is not None:
        contexts.move_to_end(key)
        return context
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    with (
        _private_file(certificate.certificate_pem.encode("ascii")) as cert_path,
        _private_file(certificate.private_key_pem.encode("ascii")) as key_path,
    ):
        context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    contexts[key] = context
    while len(contexts) > CLIENT_CONTEXTS_PER_THREAD:
        contexts.popitem(last=False)
    return context


def refused_by_policy(url: str) -> TransportError | None:
    """The error of sending to `url` under the current policy, or None if it may be sent."""
    try:
        validate_webhook_url(url)
    except ValidationError as exc:
        message = " ".join(exc.messages)
        if exc.code == "blocked_address":
            return TransportError(
                BLOCKED_ADDRESS, f"refused to connect: {url} resolves to a non-public address ({message})"
            )
        return TransportError(REFUSED_URL, f"URL refused by the transport policy at send time: {message}")
    return None


def post(
    url: str, body: bytes, headers: dict[str, str], client_certificate: EndpointClientCertificate | None = None
) -> Result:
    """POST `body` to `url`; never raises for network trouble, it returns it as `Result.error`.

    The URL is checked against the transport policy first; a refused URL is an error without
    any connection. `client_certificate` is presented to the receiver when given (mTLS).
    """
    return request("POST", url, headers, body, client_certificate)


def request(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None = None,
    client_certificate: EndpointClientCertificate | None = None,
) -> Result:
    """`post()` for any method (the verification handshake sends OPTIONS): the same policy
    check, SSRF guard, deadlines, response cap and no redirects."""
    refusal = refused_by_policy(url)
    if refusal is not None:
        return Result(error=refusal)
    timeout = webhook_settings.REQUEST_TIMEOUT
    connect_timeout = min(webhook_settings.CONNECT_TIMEOUT, timeout)
    cap = webhook_settings.MAX_RESPONSE_BYTES
    started = time.monotonic()
    deadline = started + timeout
    session = _session(webhook_settings.ALLOW_PRIVATE_NETWORKS)
    result = Result()
    watched: list[_Alarm] = []
    _local.deadline, _local.watched = deadline, watched
    try:
        # Inside the try: an unusable key is an SSLError of this attempt.
        _local.client_context = _client_context(client_certificate) if client_certificate is not None else None
        # Prepared here and sent as is: Session.request() would merge cookies, proxies and
        # environment settings we never use, at a third of the client's CPU per request.
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers={**session.headers, **headers}, data=body)
        response = session.send(
            prepared,
            timeout=(connect_timeout, timeout),
            allow_redirects=False,
            stream=True,
            verify=webhook_settings.CA_BUNDLE or True,
            cert=None,
            proxies={},
        )
        try:
            content, truncated = _read_capped(response, deadline, cap)
        finally:
            _stop_watching(watched)  # before the connection goes back to the pool
            response.close()
        result.response = Response(response.status_code, dict(response.headers), content, truncated)
    except InvalidIPAddress as exc:
        result.error = TransportError(
            BLOCKED_ADDRESS, f"refused to connect: {url} resolves to a non-public address ({exc})"
        )
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # Reading the streamed body raises urllib3's own errors (and bare socket errors),
        # not requests' wrappers.
        result.error = TransportError(type(exc).__name__, _describe(exc, timeout))
    finally:
        _stop_watching(watched)
        _local.client_context = None
    if any(alarm.fired for alarm in watched):
        # The watchdog cut the response off: whatever was parsed of it may be incomplete.
        result.response = None
        result.error = TransportError(DeadlineExceeded.__name__, _describe(DeadlineExceeded(), timeout))
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _stop_watching(watched: list[_Alarm]) -> None:
    """Take this request's sockets off the watchdog (after this, no alarm of theirs fires)."""
    _local.watched = None
    for alarm in watched:
        _watchdog.disarm(alarm)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, DeadlineExceeded):
        return f"no complete response within {timeout:g} s"
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        return f"no complete response within {timeout:g} s"
    return (str(exc) or type(exc).__name__)[:500]
