"""Which network addresses a webhook may be sent to (the SSRF guard's rules).

A webhook sender makes HTTP requests to URLs chosen by strangers. Unless
WEBHOOKS_ALLOW_PRIVATE_NETWORKS is on, only globally routable unicast addresses are allowed.
One policy, `blocked_reason()`, serves both moments: at save time (and again before each send)
we refuse what is already visibly internal (IP literals in any notation, localhost names) so
the operator hears about it at once; at every send the transport resolves the host again,
classifies every address that comes back with the same function and connects to exactly the
address it checked (deliveries/connect_guard.py), so a DNS record changed after the endpoint
was saved cannot point a send inside the network.
"""

import ipaddress
import socket

from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL_HOSTNAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")

# IPv6 forms that carry an IPv4 address in their last 32 bits. Each is refused outright,
# whatever it embeds: the deprecated IPv4-compatible form (RFC 4291), the IPv4-translated form
# (RFC 2765) and NAT64's well-known prefix (RFC 6052) reach an IPv4 host only through a translator or
# tunnel inside our own network. When the embedded address is itself internal, the reason
# names it ("IPv4-compatible loopback"), which is what the operator needs to hear.
_EMBEDDING_IPV4 = (
    (ipaddress.IPv6Network("::ffff:0:0:0/96"), "IPv4-translated"),
    (ipaddress.IPv6Network("64:ff9b::/96"), "NAT64"),
    (ipaddress.IPv6Network("::/96"), "IPv4-compatible"),
)
# Ranges with a reason of their own, checked before the standard library's flags: it calls
# site-local fec0::/10 (deprecated by RFC 3879, still routed inside some networks) global,
# and the documentation ranges merely "private", in the Python versions we support. The
# local-use NAT64 prefix (RFC 8215) places the IPv4 address by prefix length: refused whole.
_NAMED_RANGES = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("fec0::/10", "site-local"),
        ("64:ff9b:1::/48", "NAT64"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
    )
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address, bool] | None:
    """The IPv4 address `ip` carries, how (its form), and whether that form is refused outright."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped, True
    for net, form in _EMBEDDING_IPV4:
        if ip in net:
            return form, ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), True
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour, False
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1], False
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Return why a webhook must not go to `ip` ("loopback", "private", ...), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            # A zone index ("fe80::1%eth0") only means something on this machine's links.
            return blocked_reason(ipaddress.IPv6Address(int(ip))) or "scoped"
        if ip.is_unspecified or ip.is_loopback:  # "::" and "::1" lie inside ::/96
            return "unspecified" if ip.is_unspecified else "loopback"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, ipv4, refused_outright = embedded
            reason = blocked_reason(ipv4)
            if reason:
                return f"{form} {reason}"
            if refused_outright:
                return form
    for net, reason in _NAMED_RANGES:
        if ip.version == net.version and ip in net:
            return reason
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


def address_phrase(reason: str) -> str:
    """`reason` as a noun phrase for messages: "a loopback address", "an IPv4-mapped ... address"."""
    article = "an" if reason[:1] in "aeiouAEIOU" or reason.startswith("IPv") else "a"
    return f"{article} {reason} address"


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
