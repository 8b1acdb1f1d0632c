"""Datapath flows as loxilb's `GET /config/conntrack/all` strings."""

from __future__ import annotations

from pyloxi.engine.program import Flow, ServiceProgram
from pyloxi.model.conntrack import ConntrackEntry
from pyloxi.model.lb import PROTO_NUMBERS, NatMode

PROTO_NAMES = {num: name for name, num in PROTO_NUMBERS.items()} | {58: "icmp6"}


def _proto_name(flow: Flow) -> str:
    # The datapath keys an ICMPv6 echo as protocol 1 of an IPv6 flow (maps.h); loxilb lists
    # IPv6 echo flows as "icmp6".
    if flow.proto == 1 and ":" in flow.src:
        return "icmp6"
    return PROTO_NAMES.get(flow.proto, str(flow.proto))


def _weight(prog: ServiceProgram | None, flow: Flow) -> int:
    if prog is None:
        return 0
    for slot in prog.endpoints:
        # dp port 0 ("keep the client's port") matches whatever port the flow went to.
        if slot.ip == flow.ep_ip and slot.port in (flow.ep_port, 0):
            return slot.weight
    return 0


def conntrack_act(prog: ServiceProgram | None, flow: Flow) -> str:
    """loxilb's action string: `dnat-<ep>:<port>:w<weight>` (DNAT only),
    `fdnat-<snat>,<ep>:<port>:w<weight>` (fullnat/onearm), `ddsr-<ep>:<port>:w<weight>` (dsr).
    Without a program (a flow outliving its rule) the mode is inferred from the flow's SNAT.
    An egress SNAT flow (firewall doSnat): `snat-<toIP>:<port>`."""
    if flow.egress:
        return f"snat-{flow.snat_ip}:{flow.snat_port}"
    target = f"{flow.ep_ip}:{flow.ep_port}:w{_weight(prog, flow)}"
    if prog is not None and prog.mode == NatMode.DSR:
        return f"ddsr-{target}"
    if flow.snat_ip:
        return f"fdnat-{flow.snat_ip},{target}"
    return f"dnat-{target}"


def to_entry(prog: ServiceProgram | None, flow: Flow) -> ConntrackEntry:
    return ConntrackEntry(
        destination_ip=flow.dst,
        source_ip=flow.src,
        destination_port=flow.dport,
        source_port=flow.sport,
        protocol=_proto_name(flow),
        conntrack_state=flow.state,
        conntrack_act=conntrack_act(prog, flow),
        packets=flow.packets,
        bytes=flow.bytes,
        serv_name=_serv_name(prog, flow),
    )


def _serv_name(prog: ServiceProgram | None, flow: Flow) -> str:
    """The rule's name; an egress SNAT flow is named as loxilb names the hidden rule its SNAT
    firewall rule makes, `snat:<toIP>:<toPort>` (0: the port is allocated)."""
    if flow.egress:
        return f"snat:{flow.snat_ip}:{flow.snat_port if flow.egress_fixed else 0}"
    return prog.name if prog is not None and prog.name else "-"

