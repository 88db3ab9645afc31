"""Which network destinations outbound HTTP (the ``api`` agent kind) may reach: SSRF policy.

Pure: the engine resolves a host name once, asks this module about the name and about every
address it resolved to, and connects only to an address that passed (SPEC section 10; n8n
GHSA-3875-8gcx-7v46, Dify CVE-2025-56520). The checks, in order:

1. a name on the operator's deny list, or a cloud metadata name, is refused before any lookup;
2. every resolved address is refused when the deny list covers it, unless the allow list does;
   otherwise when it is not a public unicast address (loopback, RFC 1918, link-local, CGNAT,
   ULA, multicast, reserved, documentation, ...). IPv6 forms that carry an IPv4 address
   (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by that IPv4 address; Teredo is
   refused outright.

The allow list holds networks (``127.0.0.1/32``, ``10.0.0.0/8``, ``fd00::/8``) and host names
(``intranet.example.com``, or ``*.corp.example.com`` for any name below it). An allowed name
permits whatever its addresses are, except cloud metadata addresses, which only an allowed
network covering them permits. One address refused refuses the request: a DNS answer that
mixes a public and a private address is an attack, not a fallback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in pairs)


BLOCKED_V4 = _nets(
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("10.0.0.0/8", "a private (RFC 1918) address"),
    ("100.64.0.0/10", "a carrier-grade NAT (RFC 6598) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private (RFC 1918) address"),
    ("192.0.0.0/24", "an IETF protocol assignment address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("192.168.0.0/16", "a private (RFC 1918) address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
)
BLOCKED_V6 = _nets(
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001::/32", "a Teredo address"),
    ("2001::/23", "an IETF protocol assignment address"),
    ("2001:db8::/32", "a documentation address"),
    ("fc00::/7", "a unique local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "168.63.129.16",  # Azure wire server (a public address)
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
"""Cloud metadata endpoints: hand out instance credentials, so never reached by a name on the
allow list (only by an allowed network covering them); 168.63.129.16 is public, hence listed."""

METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
"""Names that resolve to a metadata service inside a cloud; refused before any lookup."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_SIXTOFOUR = ipaddress.ip_network("2002::/16")


class AddressRefused(ValueError):
    """A destination the policy refuses; the message names the host, the address and why."""

    def __init__(self, host: str, reason: str, address: str | None = None) -> None:
        where = host if address is None or address == host else f"{host} ({address})"
        super().__init__(f"refused to connect to {where}: {reason}")
        self.host = host
        self.address = address
        self.reason = reason


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets: the form names are compared in."""
    return host.strip().strip("[]").rstrip(".").lower()


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIXTOFOUR:
        return address.sixtofour
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # ::/128 and ::1 keep their meaning
        return ipaddress.IPv4Address(int(address))
    return None


def non_public_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast destination, or None when it is."""
    inner = embedded_ipv4(address)
    if inner is not None:
        reason = non_public_reason(inner)
        return None if reason is None else f"{reason} inside an IPv6 address"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    table = BLOCKED_V4 if isinstance(address, ipaddress.IPv4Address) else BLOCKED_V6
    for network, reason in table:
        if address in network:
            return reason
    if not address.is_global:  # anything newly reserved that the tables above do not name
        return "not a globally routable address"
    return None


def _is_metadata(address: IPAddress) -> bool:
    inner = embedded_ipv4(address)
    return (inner or address) in METADATA_ADDRESSES


def _name_matches(host: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _in_any(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    candidates = [address]
    inner = embedded_ipv4(address)
    if inner is not None:
        candidates.append(inner)
    return any(a.version == n.version and a in n for a in candidates for n in networks)


@dataclass(frozen=True)
class NetPolicy:
    """The operator's SSRF policy (``[runtimes.http]`` settings), parsed."""

    enabled: bool = True
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    deny_networks: tuple[IPNetwork, ...] = ()
    deny_hosts: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls, *, enabled: bool = True, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> NetPolicy:
        """Raises ValueError naming an entry that is neither a network nor a host name."""
        allow_networks, allow_hosts = parse_entries(allow)
        deny_networks, deny_hosts = parse_entries(deny)
        return cls(enabled, allow_networks, allow_hosts, deny_networks, deny_hosts)

    def check_name(self, host: str) -> None:
        """Before resolving ``host``: refuse denied names and metadata names."""
        name = normalize_host(host)
        if not name:
            raise AddressRefused(host, "the host name is empty")
        if _name_matches(name, self.deny_hosts):
            raise AddressRefused(host, "the host is on the operator's deny list")
        if not self.enabled:
            return
        if name in METADATA_NAMES and not _name_matches(name, self.allow_hosts):
            raise AddressRefused(host, "a cloud metadata host name")

    def check_addresses(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """After resolving ``host``: every address must pass, or the request is refused."""
        name = normalize_host(host)
        name_allowed = _name_matches(name, self.allow_hosts)
        seen = False
        for address in addresses:
            seen = True
            if _in_any(address, self.deny_networks):
                raise AddressRefused(
                    host, "the address is on the operator's deny list", str(address)
                )
            if not self.enabled or _in_any(address, self.allow_networks):
                continue
            if name_allowed and not _is_metadata(address):
                continue
            reason = non_public_reason(address)
            if reason is not None:
                raise AddressRefused(
                    host, f"{reason} (an operator may allow it in [runtimes.http] allow)",
                    str(address),
                )  # fmt: skip
        if not seen:
            raise AddressRefused(host, "the host name resolved to no address")


def parse_entries(entries: Iterable[str]) -> tuple[tuple[IPNetwork, ...], tuple[str, ...]]:
    """Split allow/deny entries into networks (an address is a /32 or /128) and host names."""
    networks: list[IPNetwork] = []
    hosts: list[str] = []
    for raw in entries:
        entry = raw.strip()
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = normalize_host(entry)
        bare = name.removeprefix("*.")
        labels = bare.split(".")
        if not bare or any(
            not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label)
            for label in labels
        ):
            raise ValueError(f"{raw!r} is neither a network (CIDR or address) nor a host name")
        hosts.append(name)
    return tuple(networks), tuple(hosts)
