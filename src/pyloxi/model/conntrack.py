"""Conntrack entry as loxilb's `GET /config/conntrack/all` reports it."""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import WireModel


class ConntrackEntry(WireModel):
    destination_ip: str = Field(alias="destinationIP")
    source_ip: str = Field(alias="sourceIP")
    destination_port: int = Field(alias="destinationPort")
    source_port: int = Field(alias="sourcePort")
    protocol: str = Field(alias="protocol")
    conntrack_state: str = Field(alias="conntrackState")
    ident: str = Field(default="", alias="ident")
    conntrack_act: str = Field(alias="conntrackAct")
    packets: int = Field(default=0, alias="packets")
    bytes: int = Field(default=0, alias="bytes")
    serv_name: str = Field(default="-", alias="servName")


class ConntrackList(WireModel):
    ct_attr: list[ConntrackEntry] = Field(default_factory=list, alias="ctAttr")
