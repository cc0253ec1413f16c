"""The SSRF guard at connect time: resolve the host, classify every address, pin the connection.

The save-time check (endpoints/validation.py) sees only the URL; what a host name resolves to
is only known at send time, and can change between sends. So at every new connection the
adapter here resolves the name once, runs every address that comes back through the same
classifier the save-time check uses (`endpoints.network_policy.blocked_reason`), and hands
urllib3 the checked address itself, so no second lookup happens between check and connect.

The rule for a name with several addresses: if ANY of them is blocked, the send is refused.
Which address a client ends up using depends on the order of the answer and on which
addresses answer; a name that mixes a public address with an internal one is the shape of a
DNS-rebinding attack, and refusing it is the safe, simple rule. Otherwise the first address
is used, as requests-hardened and urllib3 do.

requests-hardened's own filter (IPFilterAdapter) is not used: it checks only the first address
and with narrower rules (it let IPv4-compatible `::7f00:1`, IPv4-translated `::ffff:0:7f00:1`
and site-local `fec0::1` through). What it does besides, the Host header and the TLS server
name of the original host, is done the same way here.
"""

import ipaddress
import socket

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests_hardened.ip_filter import InvalidIPAddress
from urllib3.util.connection import allowed_gai_family

from endpoints.network_policy import address_phrase, blocked_reason

__all__ = ["BlockedAddressError", "GuardedAdapter", "resolve_checked_address"]


class BlockedAddressError(InvalidIPAddress):
    """The host resolves to an address the SSRF guard refuses (a requests exception)."""


def resolve_checked_address(host: str, port: int | None) -> str:
    """Resolve `host` and return the address to connect to, in URL form (`[v6]` bracketed).

    Raises BlockedAddressError naming the first refused address when any address the name
    resolves to is refused by `blocked_reason()`, and requests.ConnectionError when the name
    does not resolve.
    """
    try:
        answers = socket.getaddrinfo(host, port, family=allowed_gai_family(), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise requests.ConnectionError(f"Failed to resolve {host!r} ({exc})") from exc
    except UnicodeError as exc:  # the resolver's own IDNA encoding: a label empty or too long
        raise requests.exceptions.InvalidURL(f"Failed to resolve {host!r} ({exc})") from exc
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for family, _type, _proto, _canonname, sockaddr in answers:
        try:
            if family not in (socket.AF_INET, socket.AF_INET6):
                raise ValueError(f"address family {family}")
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError as exc:
            raise BlockedAddressError(f"{host} resolves to an unusable address ({exc})") from None
        reason = blocked_reason(ip)
        if reason:
            raise BlockedAddressError(f"{host} resolves to {sockaddr[0]}, {address_phrase(reason)}")
        addresses.append(ip)
    if not addresses:
        raise requests.ConnectionError(f"Failed to resolve {host!r} (no address)")
    first = addresses[0]
    return f"[{first}]" if first.version == 6 else str(first)


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections go only to addresses the SSRF guard allows."""

    def __init__(self, is_https_proto: bool) -> None:
        super().__init__()
        self._is_https_proto = is_https_proto

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host, port = host_params["host"], host_params["port"]
        # Copied, not changed in place: the headers may be shared with other requests.
        request.headers = CaseInsensitiveDict(request.headers or {})
        # The receiver still sees its own name (urllib3 would otherwise send the pinned address).
        host_header = f"[{host}]" if ":" in host else host
        request.headers["Host"] = host_header if port is None else f"{host_header}:{port}"
        if self._is_https_proto:
            # Certificate and SNI checked against the name, not the pinned address.
            pool_kwargs["assert_hostname"] = host
            pool_kwargs["server_hostname"] = host
        # Pools are keyed by the checked address: a connection is never reused for a name
        # after its address changed.
        host_params["host"] = resolve_checked_address(host, port)
        return host_params, pool_kwargs

    def get_connection(self, url, proxies=None):
        # The deprecated path would bypass build_connection_pool_key_attributes (and the guard).
        raise NotImplementedError("GuardedAdapter supports get_connection_with_tls_context only")
