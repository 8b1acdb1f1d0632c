"""The engine's checks of a posted LB rule, into a canonical request.

The wire model (pyloxi.model) has already checked every field on its own: types, ranges,
address syntax, enum values, lengths. What is left here is what no field type can say: checks
across fields (a port range, icmp without ports, dsr needs hash, address families: NAT66 and
NAT64 yes, NAT46 no), what this engine supports (the NAT modes of the datapath), options
accepted by loxilb that pyloxi does not implement yet (answered "not supported yet" rather
than accepted and ignored), and duplicates.

Everything here is pure: a bad request raises InvalidInput (HTTP 400) with a one-line reason
before the engine touches any table, datapath or store. The canonical form is what the engine
stores, lists and compares for "identical re-POST" (409): defaults are resolved so that posting
a rule again as GET shows it counts as identical.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace

from pyloxi.model.enums import PROTO_NUMBERS, NatMode, Oper, ProbeType, Protocol, Selection
from pyloxi.model.errors import InvalidInput
from pyloxi.model.lb import AllowedSource, Endpoint, LoadBalancerEntry, SecondaryIP
from pyloxi.model.limits import (
    DEFAULT_IDLE_TIMEOUT,
    MAX_ENDPOINTS,
    MAX_PORTS_PER_SERVICE,
    PORT_MAX,
)

SUPPORTED_SELECTIONS = frozenset(
    {Selection.RR, Selection.HASH, Selection.PRIORITY, Selection.PERSIST, Selection.LC}
)
# Modes that need machinery the engine does not have (a user-space proxy, per-local-address
# replication): refused even if a datapath claims them.
NEVER_SUPPORTED_MODES = frozenset({NatMode.FULLPROXY, NatMode.HOSTONEARM})
# Probe types that take no port.
PORTLESS_PROBES = frozenset({ProbeType.PING, ProbeType.NONE})
# NAT64 (IPv6 VIP, IPv4 endpoints) needs a source NAT to an IPv4 address, which these modes
# give; dsr rewrites only the destination, so its packets cannot change family.
NAT64_MODES = frozenset({NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT})
_V4_MAPPED = bytes(10) + b"\xff\xff"


@dataclass(frozen=True, slots=True)
class RuleKey:
    """Identity of a rule: (externalIP, protocol, port, portMax, block, host).
    port_max is 0 when the rule has no range (a posted portMax equal to port means no range)."""

    vip: str
    protocol: Protocol
    port: int
    port_max: int
    block: int
    host: str

    def __str__(self) -> str:
        ports = f"{self.port}-{self.port_max}" if self.port_max else str(self.port)
        extra = f" block {self.block}" if self.block else ""
        extra += f" host {self.host}" if self.host else ""
        vip = f"[{self.vip}]" if ":" in self.vip else self.vip
        return f"{vip}:{ports}/{self.protocol}{extra}"

    @property
    def last_port(self) -> int:
        return self.port_max or self.port


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A validated endpoint. `dp_port` is what the datapath gets: 0 keeps the client's port."""

    ip: str
    target_port: int  # canonical wire targetPort
    dp_port: int
    weight: int

    @property
    def identity(self) -> str:
        # Identity of an endpoint inside a rule (and the Maglev hash input).
        return f"{self.ip}:{self.dp_port}"


@dataclass(frozen=True, slots=True)
class RuleSpec:
    key: RuleKey
    oper: Oper
    dp_vip: str  # privateIP if given, else the VIP: the address the datapath matches
    proto: int
    sel: Selection
    mode: NatMode
    idle_timeout: int
    endpoints: tuple[EndpointSpec, ...]
    allowed_sources: tuple[str, ...]
    entry: LoadBalancerEntry  # canonical wire form, oper reset to 0, output fields cleared
    secondary_vips: tuple[str, ...] = ()  # SCTP multihoming: extra VIPs of the same service


def _ip(value: str, what: str, *, vip: bool = False) -> str:
    """The address as the datapath can use it: IPv4 or IPv6, unicast, not unspecified, in
    canonical text. The model has checked the syntax and canonicalised it; parsing again is the
    cheap way to tell the family (inet_pton: 20x faster than ipaddress), and it still refuses an
    address put into an entry without validation (`model_copy(update=...)`). `vip`: an address
    clients send to (externalIP, privateIP), which may not be IPv6 link-local (no interface
    would be named)."""
    text = value.strip()
    # ValueError too: inet_pton raises it (not OSError) for a NUL or a lone surrogate.
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return _v6(text, value, what, vip=vip)
    if packed == b"\0\0\0\0":
        raise InvalidInput(f"{what} {value}: unspecified address not allowed")
    if 224 <= packed[0] <= 239 or packed == b"\xff\xff\xff\xff":
        raise InvalidInput(f"{what} {value}: not a unicast address")
    return socket.inet_ntop(socket.AF_INET, packed)


def _v6(text: str, value: str, what: str, *, vip: bool) -> str:
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        if "%" in text:  # the model keeps a scoped "fe80::1%eth0"; the datapath cannot
            raise InvalidInput(f"{what} {value[:64]}: scoped address not allowed") from None
        raise InvalidInput(f"malformed {what} {value[:64]!r}") from None
    if packed == bytes(16):
        raise InvalidInput(f"{what} {value}: unspecified address not allowed")
    if packed[0] == 0xFF:
        raise InvalidInput(f"{what} {value}: not a unicast address")
    if packed[:12] == _V4_MAPPED:
        # The maps store IPv4 this way: accepting it would make one address two rules.
        v4 = socket.inet_ntop(socket.AF_INET, packed[12:])
        raise InvalidInput(f"{what} {value}: IPv4-mapped address, write the IPv4 form {v4}")
    if vip and packed[0] == 0xFE and packed[1] & 0xC0 == 0x80:
        raise InvalidInput(f"{what} {value}: link-local address not allowed")
    return socket.inet_ntop(socket.AF_INET6, packed)


def family(ip: str) -> int:
    """4 or 6, for an address this module returned (canonical: only IPv6 has a colon)."""
    return 6 if ":" in ip else 4


def _protocol(protocol: str) -> Protocol:
    try:
        return Protocol(protocol.strip().lower())
    except ValueError:
        raise InvalidInput(
            f"unknown protocol {protocol[:32]!r} ({', '.join(Protocol)})"
        ) from None


def parse_key(
    vip: str, port: int, protocol: str, port_max: int = 0, block: int = 0, host: str = ""
) -> RuleKey:
    """The identifying fields of a rule, canonical. Ports and block are in their wire ranges
    (the model, or the delete route's path parsing, checked them)."""
    proto = _protocol(protocol)
    vip_c = _ip(vip, "externalIP", vip=True)
    if proto == Protocol.ICMP:
        if port != 0 or port_max != 0:
            raise InvalidInput("icmp rules must use port 0 and no portMax")
    else:
        if port == 0:
            raise InvalidInput(f"port 0 not allowed for {proto} rules (1..{PORT_MAX})")
        if port_max:
            if port_max < port:
                raise InvalidInput(f"portMax {port_max} < port {port}")
            if port_max == port:
                port_max = 0
            elif port_max - port + 1 > MAX_PORTS_PER_SERVICE:
                raise InvalidInput(
                    f"port range {port}-{port_max} larger than {MAX_PORTS_PER_SERVICE} ports"
                )
    return RuleKey(vip_c, proto, port, port_max, block, host)


def _endpoint(ep: Endpoint, key: RuleKey, mode: NatMode) -> EndpointSpec:
    ip = _ip(ep.endpoint_ip, "endpointIP")
    tp = ep.target_port
    if key.protocol == Protocol.ICMP:
        if tp != 0:
            raise InvalidInput(f"endpoint {ip}: icmp rules need targetPort 0")
        return EndpointSpec(ip, 0, 0, ep.weight)
    if tp == 0:
        tp = key.port  # canonical: "same port as the service"
    if mode == NatMode.DSR and tp != key.port:
        raise InvalidInput(f"endpoint {ip}: dsr-port error (targetPort must equal port)")
    if key.port_max:
        # Range rule: targetPort == port keeps the client's destination port (dp_port 0);
        # any other targetPort shifts the range: dport -> targetPort + (dport - port).
        if tp == key.port:
            return EndpointSpec(ip, tp, 0, ep.weight)
        if tp + (key.port_max - key.port) > PORT_MAX:
            raise InvalidInput(f"endpoint {ip}: targetPort {tp} shifts the range past {PORT_MAX}")
    return EndpointSpec(ip, tp, tp, ep.weight)


# Options loxilb implements and pyloxi does not yet. Earlier versions accepted them and did
# nothing; a request asking for one is told so (400), until an issue implements it. Empty now:
# `bgp` (the last one) is implemented by pyloxi.bgp (the VIP is announced through gobgpd).
NOT_SUPPORTED_YET: dict[str, str] = {}


def _asks_unsupported(entry: LoadBalancerEntry) -> list[str]:
    """The NOT_SUPPORTED_YET options `entry` asks for."""
    return []


def drop_unsupported(entry: LoadBalancerEntry) -> tuple[LoadBalancerEntry, str | None]:
    """For rules persisted by an earlier version, which accepted the NOT_SUPPORTED_YET options
    and ignored them: the entry without them, so that it applies as it did, and a note of what
    was dropped (None: nothing was). Nothing is dropped today: a persisted `bgp: true` is now
    honoured (the VIP is announced when the daemon runs with --bgp)."""
    asked = _asks_unsupported(entry)
    if not asked:
        return entry, None
    note = f"{' and '.join(asked)} dropped: not supported yet (ignored before)"
    return entry, note


def _check_families(key: RuleKey, mode: NatMode, eps: tuple[EndpointSpec, ...]) -> None:
    """Endpoints share one family; an IPv4 VIP needs IPv4 endpoints (NAT46 is not built: loxilb
    refuses it too); an IPv6 VIP with IPv4 endpoints is NAT64, in the modes that SNAT."""
    families = {family(ep.ip) for ep in eps}
    if len(families) > 1:
        raise InvalidInput("malformed-service mixed-family error: endpoints of both IPv4 and "
                           "IPv6 in one rule")
    if not families:
        return
    vip_family, ep_family = family(key.vip), families.pop()
    if vip_family == 4 and ep_family == 6:
        raise InvalidInput(f"malformed-service nat46 error: IPv4 externalIP {key.vip} with "
                           "IPv6 endpoints")
    if vip_family == 6 and ep_family == 4 and mode not in NAT64_MODES:
        raise InvalidInput(f"mode {mode.name.lower()} cannot do NAT64 (IPv6 externalIP "
                           f"{key.vip} with IPv4 endpoints): use default, onearm or fullnat")
    if vip_family == 6 and ep_family == 4 and key.protocol == Protocol.SCTP:
        # the datapath translates TCP, UDP and echo (xlate.h): an SCTP INIT's address
        # parameters would name the client's IPv6 addresses to an IPv4 endpoint
        raise InvalidInput(f"NAT64 of sctp not supported (IPv6 externalIP {key.vip} with IPv4 "
                           "endpoints): use IPv6 endpoints")


def _secondary_vips(entry: LoadBalancerEntry, vip: str, dp_vip: str) -> tuple[str, ...]:
    """SCTP multihoming: the secondary IPs (at most 3, the model checks the count), each an
    extra VIP of the rule, distinct from the VIP and from each other."""
    out: list[str] = []
    if entry.secondary_ips and ":" in dp_vip:
        raise InvalidInput("secondaryIPs with an IPv6 VIP: not supported yet")
    for s in entry.secondary_ips or []:
        ip = _ip(str(s.secondary_ip), "secondaryIP", vip=True)
        if family(ip) != 4:   # loxilb: no v4-VIP/v6-secondary mix
            raise InvalidInput(f"secondaryIP {ip}: not of the externalIP's family (IPv4)")
        if ip in (vip, dp_vip) or ip in out:
            raise InvalidInput(f"secondaryIP {ip}: duplicate of the VIP or another secondaryIP")
        out.append(ip)
    return tuple(out)


# A copy of this with three fields replaced is what Endpoint.model_construct builds, in half
# its time (model_construct resolves every field's default on each call; ~10 µs a create).
_WIRE_EP = Endpoint.model_construct(endpoint_ip="", target_port=0, weight=0)


def _wire_endpoints(eps: tuple[EndpointSpec, ...]) -> list[Endpoint]:
    """The canonical wire endpoints. Built without validating again: every value comes from
    a validated entry (the model's checks, then the ones above)."""
    return [_WIRE_EP.model_copy(update={"endpoint_ip": e.ip, "target_port": e.target_port,
                                        "weight": e.weight})
            for e in eps]


def validate(
    entry: LoadBalancerEntry,
    *,
    supported_modes: frozenset[NatMode],
    supported_protocols: frozenset[str],
) -> RuleSpec:
    """Check `entry` completely; return its canonical form. Raises InvalidInput.

    An empty endpoint list passes (the engine decides: 400 on create, delete on update)."""
    a = entry.service_arguments
    if a.egress:  # before the address check: loxilb's egress rules have VIP 0.0.0.0
        raise InvalidInput("egress rules (egress: true, loxilb's VXLAN cluster egress) not "
                           "supported; for egress SNAT use a firewall rule with doSnat "
                           "(pyloxi create firewall --snat=IP --egress)")
    key = parse_key(a.external_ip, a.port, a.protocol, a.port_max, a.block, a.host)
    if key.protocol not in supported_protocols:
        raise InvalidInput(f"protocol {key.protocol} not supported")
    sel, mode = a.sel, a.mode
    if sel not in SUPPORTED_SELECTIONS:
        raise InvalidInput(f"sel {sel.name.lower()} not supported")
    if mode not in supported_modes or mode in NEVER_SUPPORTED_MODES:
        raise InvalidInput(f"mode {mode.name.lower()} not supported")
    if mode == NatMode.DSR and sel != Selection.HASH:
        raise InvalidInput("only hash selection (sel=1) is allowed for dsr mode")
    if a.security != 0:
        raise InvalidInput("security (TLS) needs fullproxy mode, not supported")
    if a.proxy_protocol_v2:
        if key.protocol != Protocol.TCP:
            raise InvalidInput("proxyprotocolv2 is only allowed with tcp")
        raise InvalidInput("proxyprotocolv2 not supported")
    if entry.secondary_ips and key.protocol != Protocol.SCTP:
        raise InvalidInput("secondaryIPs are only allowed for sctp")
    asked = _asks_unsupported(entry)
    if asked:
        raise InvalidInput(NOT_SUPPORTED_YET[asked[0]])
    vip_family = family(key.vip)
    dp_vip = _ip(a.private_ip, "privateIP", vip=True) if a.private_ip else key.vip
    if family(dp_vip) != vip_family:
        raise InvalidInput(
            f"privateIP {dp_vip}: IPv{family(dp_vip)}, externalIP {key.vip} is IPv{vip_family}")
    secondary = _secondary_vips(entry, key.vip, dp_vip)
    idle = a.inactive_timeout or DEFAULT_IDLE_TIMEOUT[key.protocol]

    ptype = a.probe_type
    if ptype in PORTLESS_PROBES and a.probe_port:
        raise InvalidInput(f"probeport must be 0 for probetype {ptype}")
    monitor = a.monitor or ptype not in ("", ProbeType.NONE)  # loxilb: a probe type monitors

    eps = tuple(_endpoint(ep, key, mode) for ep in entry.endpoints)
    seen: set[str] = set()
    for ep in eps:
        if ep.identity in seen:
            raise InvalidInput(f"duplicate endpoint {ep.ip}:{ep.target_port}")
        seen.add(ep.identity)
    _check_families(key, mode, eps)
    sources: list[str] = []
    for src in entry.allowed_sources or []:
        # The model keeps prefixes canonical: only IPv6 has a colon. A client reaches the VIP
        # in the VIP's family, so a prefix of the other family could never match.
        if family(src.prefix.partition("/")[0]) != vip_family:
            raise InvalidInput(f"allowedSources {src.prefix}: not of the externalIP's family "
                               f"(IPv{vip_family}), it can never match a client")
        if src.prefix not in sources:
            sources.append(src.prefix)

    canon_args = a.model_copy(
        update={
            "external_ip": key.vip,
            "private_ip": dp_vip if a.private_ip else "",
            "protocol": key.protocol,
            "port_max": key.port_max,
            "inactive_timeout": idle,
            "monitor": monitor,
            "oper": Oper.CREATE,
            "snat": False,  # output-only in loxilb; ignored on POST
        }
    )
    # Built, not validated again: every part is a validated model (the posted entry's, or
    # built above from its checked values); the model's own limits (list lengths) held for
    # the posted lists, which these are no longer than.
    canon = LoadBalancerEntry.model_construct(
        service_arguments=canon_args,
        endpoints=_wire_endpoints(eps),
        allowed_sources=[AllowedSource.model_construct(prefix=p) for p in sources] or None,
        secondary_ips=[SecondaryIP.model_construct(secondary_ip=ip) for ip in secondary] or None,
    )
    return RuleSpec(
        key=key,
        oper=a.oper,
        dp_vip=dp_vip,
        proto=PROTO_NUMBERS[key.protocol],
        sel=sel,
        mode=mode,
        idle_timeout=idle,
        endpoints=eps,
        allowed_sources=tuple(sources),
        entry=canon,
        secondary_vips=secondary,
    )


def with_endpoints(spec: RuleSpec, endpoints: tuple[EndpointSpec, ...]) -> RuleSpec:
    """`spec` with another endpoint list (attach/detach build on the installed rule)."""
    if len(endpoints) > MAX_ENDPOINTS:
        raise InvalidInput(
            f"{spec.key}: {len(endpoints)} endpoints after attach, at most {MAX_ENDPOINTS}"
        )
    _check_families(spec.key, spec.mode, endpoints)  # attach may bring another family
    entry = spec.entry.model_copy(update={"endpoints": _wire_endpoints(endpoints)})
    return replace(spec, endpoints=endpoints, entry=entry, oper=Oper.CREATE)
