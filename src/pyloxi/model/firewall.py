"""Firewall rule: loxilb's `FirewallEntry` wire object (ruleArguments + opts).

Values are typed here; what depends on several fields (port ranges, the action) is checked by
`pyloxi.engine.firewall`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from pyloxi.model.base import Address, CounterText, Name, WireModel, wire_names
from pyloxi.model.fields import Port, UInt32, _prefix


def _prefix_or_empty(value: str) -> str:
    return _prefix(value) if value.strip() else ""


# "" (the default): any address
OptionalIPPrefix = Annotated[Address, AfterValidator(_prefix_or_empty)]
Protocol = Annotated[int, Field(ge=0, le=255)]  # IP protocol number; 0: any

__all__ = ["FirewallEntry", "FirewallList", "FirewallOptionEntry", "FirewallRuleEntry"]


class FirewallRuleEntry(WireModel):
    model_config = wire_names(
        source_ip="sourceIP", destination_ip="destinationIP", min_source_port="minSourcePort",
        max_source_port="maxSourcePort", min_destination_port="minDestinationPort",
        max_destination_port="maxDestinationPort", protocol="protocol", port_name="portName",
        preference="preference",
    )  # fmt: skip

    source_ip: OptionalIPPrefix = ""
    destination_ip: OptionalIPPrefix = ""
    min_source_port: Port = 0
    max_source_port: Port = 0  # 0 with min 0: any
    min_destination_port: Port = 0
    max_destination_port: Port = 0
    protocol: Protocol = 0
    port_name: Name = ""  # ingress interface; "": any
    preference: UInt32 = 0


class FirewallOptionEntry(WireModel):
    model_config = wire_names(
        drop="drop", trap="trap", redirect="redirect", allow="allow", record="record",
        redirect_port_name="redirectPortName", fw_mark="fwMark", do_snat="doSnat",
        to_ip="toIP", to_port="toPort", on_default="onDefault", counter="counter",
    )  # fmt: skip

    drop: bool = False
    trap: bool = False
    redirect: bool = False
    allow: bool = False
    record: bool = False
    redirect_port_name: Name = ""
    fw_mark: UInt32 = 0
    do_snat: bool = False
    to_ip: Address = ""
    to_port: Port = 0
    on_default: bool = False
    counter: CounterText = ""  # output only: "<packets>:<bytes>"


class FirewallEntry(WireModel):
    model_config = wire_names(rule_arguments="ruleArguments", opts="opts")

    rule_arguments: FirewallRuleEntry
    opts: FirewallOptionEntry


class FirewallList(WireModel):
    model_config = wire_names(fw_attr="fwAttr")

    fw_attr: list[FirewallEntry] = Field(default_factory=list)
