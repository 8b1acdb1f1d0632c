"""The rule table's entries: endpoint index planning and program building (pure, immutable).

An installed rule is a frozen `Rule`; every change builds a new one, so rolling back a failed
change is putting the old object back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pyloxi.engine.program import EndpointSlot, ServiceProgram
from pyloxi.engine.selection import build_slots
from pyloxi.engine.validate import EndpointSpec, RuleSpec, family
from pyloxi.model.cluster import instance_of
from pyloxi.model.lb import NatMode

# (HA instance name, address family 4|6) -> the instance IP (cistate vip) of that family, or None
InstanceSource = Callable[[str, int], str | None]


@dataclass(frozen=True, slots=True)
class EpState:
    """An endpoint at a fixed index. `removed` marks a hole (kept so the endpoint's existing
    flows finish; reusable by a later endpoint); `down` is the liveness verdict. Both make the
    endpoint inactive, but only holes are hidden from GET."""

    ip: str
    target_port: int
    dp_port: int
    weight: int
    snat_ip: str | None
    removed: bool = False
    down: bool = False

    @property
    def identity(self) -> str:
        return f"{self.ip}:{self.dp_port}"

    @property
    def active(self) -> bool:
        return not self.removed and not self.down


@dataclass(frozen=True, slots=True)
class Rule:
    spec: RuleSpec
    svc_id: int
    eps: tuple[EpState, ...]
    program: ServiceProgram
    created: int = 0  # creation sequence: GET lists rules in this order


def plan_endpoints(
    old: Sequence[EpState], new: Sequence[EndpointSpec], snat: Callable[[str], str | None]
) -> tuple[EpState, ...]:
    """Place `new` endpoints at indexes, keeping the index of every endpoint that stays.

    - An endpoint already present (or present as a hole) keeps/revives its index; its `down`
      flag survives (the liveness verdict is about the host, not the rule's wording).
    - Endpoints missing from `new` become holes at their index, with their old address.
    - Other new endpoints take the lowest hole, else are appended.
    Holes never exceed MAX_ENDPOINTS in total because new endpoints fill holes first.
    """
    slots: list[EpState] = list(old)
    where = {ep.identity: i for i, ep in enumerate(slots)}
    wanted = {ep.identity for ep in new}
    for i, ep in enumerate(slots):
        if ep.identity not in wanted and not ep.removed:
            slots[i] = replace(ep, removed=True)
    for spec in new:
        at = where.get(spec.identity)
        if at is not None:
            prev = slots[at]
            slots[at] = EpState(
                spec.ip,
                spec.target_port,
                spec.dp_port,
                spec.weight,
                snat(spec.ip),
                removed=False,
                down=prev.down,
            )
    for spec in new:
        if spec.identity in where:
            continue
        fresh = EpState(spec.ip, spec.target_port, spec.dp_port, spec.weight, snat(spec.ip))
        hole = next((i for i, ep in enumerate(slots) if ep.removed), None)
        if hole is None:
            slots.append(fresh)
        else:
            slots[hole] = fresh
    return tuple(slots)


def build_program(spec: RuleSpec, svc_id: int, eps: Sequence[EpState]) -> ServiceProgram:
    active = [(i, ep.identity, ep.weight) for i, ep in enumerate(eps) if ep.active]
    down = [(i, ep.identity, ep.weight) for i, ep in enumerate(eps) if ep.down and not ep.removed]
    return ServiceProgram(
        svc_id=svc_id,
        name=spec.entry.service_arguments.name,
        vip=spec.dp_vip,
        proto=spec.proto,
        port_min=spec.key.port,
        port_max=spec.key.last_port,
        mode=spec.mode,
        sel=spec.sel,
        endpoints=tuple(
            EndpointSlot(ep.ip, ep.dp_port, ep.weight, ep.active, ep.snat_ip) for ep in eps
        ),
        slots=build_slots(spec.sel, active, down),
        idle_timeout=spec.idle_timeout,
        allowed_sources=spec.allowed_sources,
        secondary_vips=spec.secondary_vips,
        block=spec.key.block,
    )


def needs_local_source(spec: RuleSpec, ep_ip: str) -> bool:
    """Whether flows to `ep_ip` get the LB's own address toward it as their source: onearm
    always; NAT64 (an IPv4 endpoint behind an IPv6 VIP) in every mode that SNATs, since the
    IPv6 client (and the VIP, in fullnat) cannot be an IPv4 packet's source (loxilb: default
    mode SNATs NAT64 flows to the local IPv4 interface address)."""
    if spec.mode == NatMode.DSR:
        return False
    return spec.mode == NatMode.ONEARM or family(ep_ip) != family(spec.key.vip)


def snat_planner(
    spec: RuleSpec, snat_source: Callable[[str], str | None] | None,
    instance_ip: InstanceSource | None = None,
) -> Callable[[str], str | None]:
    """Source address an endpoint's flows get: none (default/dsr); in onearm and fullnat the
    instance IP of the rule's HA instance, of the endpoint's family, when it has one (loxilb's:
    a floating address that follows the MASTER, or in active-active each node's own, announced
    by BGP, so the endpoint's replies find the node that has the flow, or one it was synced
    to; fullnat: unless the rule gives a privateIP); otherwise the LB's own address toward the
    endpoint (onearm, NAT64; the engine checked beforehand that there is one, of the
    endpoint's family) or, in fullnat, privateIP or the VIP."""

    def instance_source(ep_ip: str) -> str | None:
        if instance_ip is None:
            return None
        return instance_ip(instance_of(spec.entry.service_arguments.name), family(ep_ip))

    def plan(ep_ip: str) -> str | None:
        if spec.mode == NatMode.ONEARM:
            return instance_source(ep_ip) or (snat_source(ep_ip) if snat_source else None)
        if needs_local_source(spec, ep_ip):
            return snat_source(ep_ip) if snat_source is not None else None
        if spec.mode == NatMode.FULLNAT:
            if not spec.entry.service_arguments.private_ip:
                own = instance_source(ep_ip)
                if own:
                    return own
            return spec.dp_vip
        return None

    return plan
