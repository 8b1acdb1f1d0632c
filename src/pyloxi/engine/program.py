"""What the engine hands to a datapath: one fully resolved service, plus the Datapath protocol.

The engine decides (validation, endpoint indexes, selection tables, SNAT addresses); a datapath
backend only writes these decisions into its tables. Backends implement `Datapath`; the engine
never imports a backend (dependency inversion keeps `engine` free of I/O).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pyloxi.model.lb import NatMode, Selection

# Limits shared with bpf/include/pyloxi/maps.h: defined in pyloxi.model.limits (with every other
# limit), compared with the header by tests/unit/test_limits.py.
from pyloxi.model.limits import MAX_ENDPOINTS as MAX_ENDPOINTS
from pyloxi.model.limits import MAX_PORTS_PER_SERVICE as MAX_PORTS_PER_SERVICE
from pyloxi.model.limits import MAX_SERVICES as MAX_SERVICES
from pyloxi.model.limits import MAX_SLOTS as MAX_SLOTS
from pyloxi.model.limits import SLOT_TABLE_SIZE as SLOT_TABLE_SIZE


@dataclass(frozen=True, slots=True)
class EndpointSlot:
    """One endpoint at a fixed index of its service. Indexes stay put while the rule lives,
    so flows of endpoints that stay are not disturbed when others come or go."""

    ip: str  # IPv4 dotted quad or IPv6, canonical text
    port: int  # target port; 0 keeps the client's destination port
    weight: int
    active: bool  # False: takes no new flows (probe down, or removed and kept as a hole)
    # Source address for onearm/fullnat/NAT64, of the endpoint's family; None: keep the client's.
    snat_ip: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceProgram:
    """A load-balancer rule as the datapath needs it."""

    svc_id: int
    name: str
    vip: str
    proto: int  # IP protocol number: 6 tcp, 17 udp, 1 icmp, 132 sctp
    port_min: int  # 0 for icmp
    port_max: int  # == port_min when the rule has no range
    mode: NatMode
    sel: Selection
    endpoints: tuple[EndpointSlot, ...]  # position == endpoint index
    # Selection table of endpoint indexes, len <= MAX_SLOTS. rr/priority: the rotation
    # (priority repeats an endpoint by weight); hash/persist: the Maglev table; lc: active
    # endpoints (the datapath picks the least loaded of them).
    slots: tuple[int, ...]
    idle_timeout: int  # seconds of inactivity before an established flow is aged out
    persist_timeout: int = 10800  # seconds a client stays on its endpoint (sel=persist)
    allowed_sources: tuple[str, ...] = ()  # source CIDRs; empty means everyone
    # SCTP multihoming: extra VIPs of the same service (same ports, endpoints and flows)
    secondary_vips: tuple[str, ...] = ()
    block: int = 0  # the rule's block: it serves packets carrying this mark (0: any packet)


@dataclass(frozen=True, slots=True)
class EndpointCounters:
    packets: int = 0
    bytes: int = 0
    active_flows: int = 0


@dataclass(frozen=True, slots=True)
class ServiceCounters:
    packets: int = 0
    bytes: int = 0
    new_flows: int = 0
    endpoints: tuple[EndpointCounters, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Flow:
    """One tracked connection, seen from the client (original direction)."""

    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    state: str  # loxilb's conntrackState strings: est, sync-sent, closed-wait, udp-est, bidir ...
    svc_id: int
    ep_ip: str
    ep_port: int
    snat_ip: str | None
    snat_port: int
    packets: int
    bytes: int
    # an egress SNAT flow (firewall doSnat): no service; snat_ip:snat_port is its source
    egress: bool = False
    egress_fixed: bool = False  # its port is the rule's toPort (else allocated)


# NAT modes a datapath handles unless it says otherwise (a `supported_modes` attribute).
DEFAULT_MODES = frozenset({NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT})


def datapath_modes(datapath: object) -> frozenset[NatMode]:
    """The NAT modes `datapath` handles: its optional `supported_modes` capability (the ebpf
    backend lists dsr only once its object does dsr), else DEFAULT_MODES."""
    modes = getattr(datapath, "supported_modes", None)
    return frozenset(modes) if modes is not None else DEFAULT_MODES


class Datapath(Protocol):
    """What the engine needs from a packet path. `ebpf` and `memory` implement it. A backend
    may also have `supported_modes` (see datapath_modes)."""

    def install_service(self, prog: ServiceProgram) -> None:
        """Create or replace a service; flows of endpoints that keep their index survive."""

    def remove_service(self, prog: ServiceProgram) -> None:
        """Remove a service and the flows that belong to it."""

    def service_counters(self, prog: ServiceProgram) -> ServiceCounters:
        """Packets/bytes of the service and of each endpoint index."""

    def flows(self) -> list[Flow]:
        """Every tracked flow, once per connection."""

    def age_flows(self) -> int:
        """Delete expired flows (per-state and idle timeouts); return how many."""

    def close(self) -> None:
        """Release handles; pinned state stays for the next daemon."""
