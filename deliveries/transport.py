"""The HTTP call: one POST of signed bytes, bounded in time and size, to a checked address.

- One `requests` session per worker thread, so connections are kept alive between sends.
- SSRF guard: unless WEBHOOKS_ALLOW_PRIVATE_NETWORKS is on, requests-hardened resolves the
  host, refuses loopback, private, link-local, multicast, reserved and IPv4-mapped addresses
  and connects to exactly the address it checked (no second DNS lookup to rebind).
- No redirects (a 3xx could point inside the network), no proxies or netrc from the
  environment (`trust_env=False`).
- Deadlines: connect timeout, then a total deadline over headers and body; every socket read
  waits at most for what is left of the deadline, so a trickling body cannot hold a worker.
- The response body is read up to WEBHOOKS_MAX_RESPONSE_BYTES and the rest is dropped.
"""

import threading
import time
from dataclasses import dataclass

import requests
import urllib3
from django.conf import settings
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress

_local = threading.local()
CHUNK_SIZE = 4096


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


def _session(allow_private: bool) -> requests.Session:
    key = "private" if allow_private else "public"
    sessions = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(key)
    if session is None:
        config = Config(
            ip_filter_enable=not allow_private,
            ip_filter_allow_loopback_ips=False,
            never_redirect=True,
            default_timeout=(settings.WEBHOOKS_CONNECT_TIMEOUT, settings.WEBHOOKS_REQUEST_TIMEOUT),
        )
        session = sessions[key] = HTTPSession(config)
        session.trust_env = False
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


def post(url: str, body: bytes, headers: dict[str, str]) -> Result:
    """POST `body` to `url`; never raises for network trouble, it returns it as `Result.error`."""
    timeout = settings.WEBHOOKS_REQUEST_TIMEOUT
    connect_timeout = min(settings.WEBHOOKS_CONNECT_TIMEOUT, timeout)
    cap = settings.WEBHOOKS_MAX_RESPONSE_BYTES
    started = time.monotonic()
    deadline = started + timeout
    session = _session(settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS)
    result = Result()
    try:
        response = session.post(
            url, data=body, headers=headers, timeout=(connect_timeout, timeout), allow_redirects=False, stream=True
        )
        try:
            content, truncated = _read_capped(response, deadline, cap)
        finally:
            response.close()
        result.response = Response(response.status_code, dict(response.headers), content, truncated)
    except InvalidIPAddress as exc:
        result.error = TransportError(
            "BlockedAddress", f"refused to connect: {url} resolves to a non-public address ({exc})"
        )
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # Reading the streamed body raises urllib3's own errors (and bare socket errors),
        # not requests' wrappers.
        result.error = TransportError(type(exc).__name__, _describe(exc, timeout))
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, DeadlineExceeded):
        return f"no complete response within {timeout:g} s"
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
        return f"no complete response within {timeout:g} s"
    return (str(exc) or type(exc).__name__)[:500]
