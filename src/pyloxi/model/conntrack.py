"""Conntrack entry as loxilb's `GET /config/conntrack/all` reports it.

Output only, built from the datapath's own values: the text fields are plain strings, not
re-checked addresses and words (a check in Python costs ~0.5-2 us a field, and a full table
lists 260k flows); numbers carry their ranges (checked in pydantic's core, at no cost).
"""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import WireModel, wire_names
from pyloxi.model.fields import Count, Port


class ConntrackEntry(WireModel):
    model_config = wire_names(
        destination_ip="destinationIP", source_ip="sourceIP",
        destination_port="destinationPort", source_port="sourcePort", protocol="protocol",
        conntrack_state="conntrackState", ident="ident", conntrack_act="conntrackAct",
        packets="packets", bytes="bytes", serv_name="servName",
    )  # fmt: skip

    destination_ip: str
    source_ip: str
    destination_port: Port
    source_port: Port
    protocol: str  # tcp | udp | sctp | icmp, or the IP protocol number
    conntrack_state: str
    ident: str = ""
    conntrack_act: str
    packets: Count = 0
    bytes: Count = 0
    serv_name: str = "-"


class ConntrackList(WireModel):
    model_config = wire_names(ct_attr="ctAttr")

    ct_attr: list[ConntrackEntry] = Field(default_factory=list)
