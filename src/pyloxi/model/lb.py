"""Load-balancer rule: the loxilb `LoadbalanceEntry` wire object.

Every field is typed (see `pyloxi.model.fields`): a value out of its own range or not of its
kind is refused here, whichever door it comes in by (REST, CLI, Kubernetes agent, the store).
What depends on several fields or on what the engine supports is checked by
`pyloxi.engine.validate`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pyloxi.model.base import CounterText, HostText, Name, ProbeText, WireModel, Word, wire_names
from pyloxi.model.enums import (
    PROTO_NUMBERS,
    PROTOCOLS,
    NatMode,
    Oper,
    ProbeType,
    Protocol,
    Selection,
)
from pyloxi.model.fields import (
    IdleTimeout,
    IPAddress,
    IPPrefix,
    OptionalIPAddress,
    Port,
    ProbeRetries,
    ProbeTimeout,
    RuleProbeType,
    UInt32,
    Weight,
    WireNatMode,
    WireOper,
    WireProtocol,
    WireSelection,
)
from pyloxi.model.limits import MAX_ALLOWED_SOURCES, MAX_ENDPOINTS, MAX_SECONDARY_IPS

__all__ = [
    "PROTOCOLS",
    "PROTO_NUMBERS",
    "AllowedSource",
    "Endpoint",
    "LoadBalancerEntry",
    "LoadBalancerList",
    "NatMode",
    "Oper",
    "ProbeType",
    "Protocol",
    "SecondaryIP",
    "Selection",
    "ServiceArguments",
]


class ServiceArguments(WireModel):
    model_config = wire_names(
        external_ip="externalIP", private_ip="privateIP", port="port", port_max="portMax",
        protocol="protocol", sel="sel", mode="mode", bgp="bgp", monitor="monitor",
        probe_type="probetype", probe_port="probeport", probe_req="probereq",
        probe_resp="proberesp", probe_timeout="probeTimeout", probe_retries="probeRetries",
        managed="managed", security="security", block="block",
        inactive_timeout="inactiveTimeOut", name="name", snat="snat", oper="oper", host="host",
        proxy_protocol_v2="proxyprotocolv2", egress="egress",
    )  # fmt: skip

    external_ip: IPAddress
    private_ip: OptionalIPAddress = ""  # "" = the datapath matches externalIP
    port: Port  # 0 only for icmp (the engine checks)
    port_max: Port = 0  # 0 or == port: no range
    protocol: WireProtocol = Protocol.TCP
    sel: WireSelection = Selection.RR
    mode: WireNatMode = NatMode.DEFAULT
    bgp: bool = False  # announce the VIP through BGP (daemon --bgp)
    monitor: bool = False
    probe_type: RuleProbeType = ""
    probe_port: Port = 0
    probe_req: ProbeText = ""
    probe_resp: ProbeText = ""
    probe_timeout: ProbeTimeout = 0
    probe_retries: ProbeRetries = 0
    managed: bool = False
    security: int = 0  # TLS needs fullproxy mode: anything but 0 is refused by the engine
    block: UInt32 = 0
    inactive_timeout: IdleTimeout = 0  # 0: the protocol's default
    name: Name = ""
    snat: bool = False  # output only
    oper: WireOper = Oper.CREATE
    host: HostText = ""
    proxy_protocol_v2: bool = False
    egress: bool = False


class Endpoint(WireModel):
    model_config = wire_names(
        endpoint_ip="endpointIP", target_port="targetPort", weight="weight", state="state",
        counter="counter",
    )

    endpoint_ip: IPAddress
    target_port: Port = 0  # 0: the rule's port
    weight: Weight = 1
    state: Word = ""  # output only: active | inactive
    counter: CounterText = ""  # output only: "<packets>:<bytes>"


class SecondaryIP(WireModel):
    model_config = wire_names(secondary_ip="secondaryIP")

    secondary_ip: IPAddress


class AllowedSource(WireModel):
    model_config = wire_names(prefix="prefix")

    prefix: IPPrefix


class LoadBalancerEntry(WireModel):
    model_config = wire_names(
        service_arguments="serviceArguments", endpoints="endpoints",
        secondary_ips="secondaryIPs", allowed_sources="allowedSources",
    )

    service_arguments: ServiceArguments
    endpoints: list[Endpoint] = Field(default_factory=list, max_length=MAX_ENDPOINTS)
    # SCTP multihoming: not supported yet (the engine refuses a non-empty list).
    secondary_ips: list[SecondaryIP] | None = Field(default=None, max_length=MAX_SECONDARY_IPS)
    allowed_sources: list[AllowedSource] | None = Field(
        default=None, max_length=MAX_ALLOWED_SOURCES
    )

    def request_body(self) -> dict[str, Any]:
        """The JSON body a client POSTs for this rule: the wire form without the output-only
        endpoint fields (`state`, `counter`) and without null lists."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True,
                               exclude=_OUTPUT_ONLY)


_OUTPUT_ONLY: Any = {"endpoints": {"__all__": {"state", "counter"}}}


class LoadBalancerList(WireModel):
    model_config = wire_names(lb_attr="lbAttr")

    lb_attr: list[LoadBalancerEntry] = Field(default_factory=list)
