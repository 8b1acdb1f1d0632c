"""BGP configuration objects, checked: what the REST API and the config file give the
speaker."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from pyloxi.model.errors import InvalidInput

ASN_MAX = 4294967295


@dataclass(frozen=True)
class BgpGlobal:
    asn: int
    router_id: str
    listen_port: int = -1  # never listen on the host's 179 unless asked


@dataclass(frozen=True)
class BgpNeighbor:
    address: str
    asn: int
    remote_port: int = 179
    multihop: bool = False


def check_global(g: BgpGlobal) -> BgpGlobal:
    if not 1 <= g.asn <= ASN_MAX:
        raise InvalidInput(f"invalid localAs {g.asn}: must be 1-{ASN_MAX}")
    try:
        rid = ipaddress.IPv4Address(g.router_id)
    except ValueError:
        raise InvalidInput(f"invalid routerId {g.router_id[:64]!r}: not an IPv4 address") from None
    if not (g.listen_port == -1 or 1 <= g.listen_port <= 65535):
        raise InvalidInput(f"invalid listenPort {g.listen_port}: must be 1-65535 (or -1: none)")
    return replace(g, router_id=str(rid))


def check_neighbor(n: BgpNeighbor) -> BgpNeighbor:
    try:
        addr = ipaddress.ip_address(n.address)
    except ValueError:
        raise InvalidInput(f"invalid ipAddress {n.address[:64]!r}: not an IP address") from None
    if not 1 <= n.asn <= ASN_MAX:
        raise InvalidInput(f"invalid remoteAs {n.asn}: must be 1-{ASN_MAX}")
    if not 1 <= n.remote_port <= 65535:
        raise InvalidInput(f"invalid remotePort {n.remote_port}: must be 1-65535")
    return replace(n, address=str(addr))
