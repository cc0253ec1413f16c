"""Which network addresses a webhook may be sent to (the SSRF guard's rules).

A webhook sender makes HTTP requests to URLs chosen by strangers. Unless
WEBHOOKS_ALLOW_PRIVATE_NETWORKS is on, only globally routable unicast addresses are allowed.
At every send the transport resolves the host again, checks the address with the same rules
(requests-hardened) and connects to exactly that address, so a DNS record changed after the
endpoint was saved cannot point a send inside the network; at save time (and again before each
send) we refuse what is already visibly internal (IP literals in any notation, localhost names)
so the operator hears about it at once.
"""

import ipaddress
import socket

from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL_HOSTNAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def blocked_reason(ip: IPAddress) -> str | None:
    """Return why a webhook must not go to `ip` ("loopback", "private", ...), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            reason = blocked_reason(mapped)
            if reason:
                return f"IPv4-mapped {reason}"
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if any(ip in net for net in EXTRA_BLOCKED_NET_RANGES):
        return "special-purpose"
    if not ip.is_global:
        return "non-global"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """Parse `host` as an IP address in any notation the resolver accepts, else None.

    Besides the canonical forms this catches what getaddrinfo also accepts for IPv4:
    decimal (2130706433), octal (0177.0.0.1), hex (0x7f.1) and short forms (127.1).
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_blocked_reason(host: str) -> str | None:
    """Why `host` (as written in a URL) is visibly internal, without resolving it."""
    name = host.strip("[]").rstrip(".").lower()
    if name in LOCAL_HOSTNAMES or name.endswith(".localhost"):
        return "loopback"
    ip = parse_ip_literal(name)
    return blocked_reason(ip) if ip is not None else None
