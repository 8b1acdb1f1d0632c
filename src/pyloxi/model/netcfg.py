"""Network configuration wire objects (loxilb swagger.yml): routes, addresses, neighbours, bridge
FDB entries, VLAN bridges and their members, VXLAN devices and their peers, ports.

The value types check what a request may name (a CIDR, a MAC, a VLAN id, an interface name)
before anything reaches the kernel; whether the interface exists is the host's answer.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from pyloxi.model.base import Address, CounterText, Name, WireModel, Word, wire_names
from pyloxi.model.fields import IPAddress, IPPrefix

__all__ = [
    "MAX_VNI", "MAX_VLAN_ID", "MIN_VLAN_ID",
    "DevName", "FDBEntry", "FdbList", "IfAddress", "IpList", "Ipv4AddressEntry",
    "Ipv4AddressGetEntry", "MacAddress", "NeighborEntry", "NeighborList", "PortEntry",
    "PortList", "RouteEntry", "RouteGetEntry", "RouteList", "RouteStatistic", "VlanBridgeEntry",
    "VlanGetEntry", "VlanId", "VlanList", "VlanMemberEntry", "VlanStatistic", "Vni",
    "VxlanBridgeEntry", "VxlanEntry", "VxlanList", "VxlanPeerEntry",
]  # fmt: skip

# loxilb's member API refuses VLAN ids below 2 or above 4094 with 400 (swagger.yml); pyloxi
# applies the same range to every VLAN operation (1 is the default PVID of Linux bridges).
MIN_VLAN_ID = 2
MAX_VLAN_ID = 4094
MAX_VNI = 2**24 - 1  # a VXLAN network identifier is 24 bits

VlanId = Annotated[int, Field(ge=MIN_VLAN_ID, le=MAX_VLAN_ID)]
Vni = Annotated[int, Field(ge=1, le=MAX_VNI)]

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$")
_MAC_DOTTED = re.compile(r"^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$")


def _mac(value: str) -> str:
    """A 6-byte MAC as Go's net.ParseMAC reads it (aa:bb:.., aa-bb-.., aabb.ccdd.eeff), in
    lower-case colon form."""
    text = value.strip()
    if _MAC.match(text):
        digits = text.replace(":", "").replace("-", "")
    elif _MAC_DOTTED.match(text):
        digits = text.replace(".", "")
    else:
        raise PydanticCustomError("mac_address", "{value} is not a MAC address",
                                  {"value": repr(value)})
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2)).lower()


def _ifname(value: str) -> str:
    """What the kernel accepts as an interface name (dev_valid_name): 1-15 bytes, not . or ..,
    no '/', ':' or white space."""
    if (not value or len(value.encode()) > 15 or value in (".", "..")
            or any(c in value for c in "/:") or any(c.isspace() for c in value)):
        raise PydanticCustomError("interface_name", "{value} is not an interface name",
                                  {"value": repr(value)})
    return value


def _if_address(value: str) -> str:
    """An interface address with its prefix length, host bits kept: "192.168.0.1/24"."""
    text = value.strip()
    if "/" not in text:
        raise PydanticCustomError("ip_interface", "{value} is not an address/prefix-length "
                                  "(such as 192.168.0.1/24)", {"value": repr(value)})
    try:
        return str(ipaddress.ip_interface(text))
    except ValueError:
        raise PydanticCustomError("ip_interface", "{value} is not an address/prefix-length "
                                  "(such as 192.168.0.1/24)", {"value": repr(value)}) from None


def _route_protocol(value: str) -> str:
    word = value.strip().lower()
    if word not in ("", "static", "boot"):
        raise PydanticCustomError("route_protocol", "{value} is not a route protocol "
                                  "(static or boot)", {"value": repr(value)})
    return word


MacAddress = Annotated[Address, AfterValidator(_mac)]
DevName = Annotated[Address, AfterValidator(_ifname)]
IfAddress = Annotated[Address, AfterValidator(_if_address)]
# route protocols a client may ask for: loxilb sets RTPROT_STATIC for "static" and leaves the
# kernel's default (boot) otherwise; other words are refused rather than silently ignored
RouteProtocol = Annotated[Word, AfterValidator(_route_protocol)]


# ---------------------------------------------------------------- routes


class RouteEntry(WireModel):
    """POST /config/route."""

    model_config = wire_names(destination_ip_net="destinationIPNet", gateway="gateway",
                              protocol="protocol")

    destination_ip_net: IPPrefix
    gateway: IPAddress
    protocol: RouteProtocol = ""


class RouteStatistic(WireModel):
    model_config = wire_names(bytes="bytes", packets="packets")

    bytes: int = 0
    packets: int = 0


class RouteGetEntry(WireModel):
    model_config = wire_names(
        destination_ip_net="destinationIPNet", gateway="gateway", hardware_mark="hardwareMark",
        protocol="protocol", flags="flags", sync="sync", statistic="statistic")

    destination_ip_net: str = ""
    gateway: str = ""  # next hops, comma-separated (loxilb's form); "" for a connected route
    hardware_mark: int = 0
    protocol: str = ""  # unspec, redirect, kernel, boot, static, or the number
    flags: str = ""  # loxilb's words: Ind (via a gateway), Host (/32, /128), Interface
    sync: int = 0
    statistic: RouteStatistic = Field(default_factory=RouteStatistic)


class RouteList(WireModel):
    model_config = wire_names(route_attr="routeAttr")

    route_attr: list[RouteGetEntry] = Field(default_factory=list)


# ---------------------------------------------------------------- addresses


class Ipv4AddressEntry(WireModel):
    """POST /config/ipv4address (IPv6 addresses are accepted too, as loxilb's netlink does)."""

    model_config = wire_names(dev="dev", ip_address="ipAddress")

    dev: DevName
    ip_address: IfAddress


class Ipv4AddressGetEntry(WireModel):
    model_config = wire_names(dev="dev", ip_address="ipAddress", sync="sync")

    dev: str = ""
    ip_address: list[str] = Field(default_factory=list)  # "address/prefix-length"
    sync: int = 0


class IpList(WireModel):
    model_config = wire_names(ip_attr="ipAttr")

    ip_attr: list[Ipv4AddressGetEntry] = Field(default_factory=list)


# ---------------------------------------------------------------- neighbours and FDB


class NeighborEntry(WireModel):
    """POST /config/neighbor, and each entry of GET /config/neighbor/all."""

    model_config = wire_names(ip_address="ipAddress", dev="dev", mac_address="macAddress")

    ip_address: IPAddress
    dev: DevName
    mac_address: MacAddress


class NeighborList(WireModel):
    model_config = wire_names(neighbor_attr="neighborAttr")

    neighbor_attr: list[NeighborEntry] = Field(default_factory=list)


class FDBEntry(WireModel):
    """POST /config/fdb, and each entry of GET /config/fdb/all."""

    model_config = wire_names(dev="dev", mac_address="macAddress")

    dev: DevName
    mac_address: MacAddress


class FdbList(WireModel):
    model_config = wire_names(fdb_attr="fdbAttr")

    fdb_attr: list[FDBEntry] = Field(default_factory=list)


# ---------------------------------------------------------------- VLAN


class VlanBridgeEntry(WireModel):
    """POST /config/vlan: creates the bridge `vlan<vid>`."""

    model_config = wire_names(vid="vid")

    vid: VlanId


class VlanMemberEntry(WireModel):
    """POST /config/vlan/{vid}/member; in GET, one member of a VLAN."""

    model_config = wire_names(dev="dev", tagged="tagged")

    dev: DevName
    tagged: bool = False  # loxilb's default: untagged


class VlanStatistic(WireModel):
    model_config = wire_names(in_bytes="inBytes", in_packets="inPackets", out_bytes="outBytes",
                              out_packets="outPackets")

    in_bytes: int = 0
    in_packets: int = 0
    out_bytes: int = 0
    out_packets: int = 0


class VlanGetEntry(WireModel):
    model_config = wire_names(vid="vid", dev="dev", member="member",
                              vlan_statistic="vlanStatistic")

    vid: int = 0
    dev: str = ""
    member: list[VlanMemberEntry] = Field(default_factory=list)
    vlan_statistic: VlanStatistic = Field(default_factory=VlanStatistic)


class VlanList(WireModel):
    model_config = wire_names(vlan_attr="vlanAttr")

    vlan_attr: list[VlanGetEntry] = Field(default_factory=list)


# ---------------------------------------------------------------- VXLAN


class VxlanBridgeEntry(WireModel):
    """POST /config/tunnel/vxlan: creates the VXLAN device `vxlan<vxlanID>` over epIntf."""

    model_config = wire_names(ep_intf="epIntf", vxlan_id="vxlanID")

    ep_intf: DevName
    vxlan_id: Vni


class VxlanPeerEntry(WireModel):
    model_config = wire_names(peer_ip="peerIP")

    peer_ip: IPAddress


class VxlanEntry(WireModel):
    model_config = wire_names(vxlan_name="vxlanName", ep_intf="epIntf", vxlan_id="vxlanID",
                              peer_ip="peerIP")

    vxlan_name: str = ""
    ep_intf: str = ""
    vxlan_id: int = 0
    peer_ip: list[str] = Field(default_factory=list)


class VxlanList(WireModel):
    model_config = wire_names(vxlan_attr="vxlanAttr")

    vxlan_attr: list[VxlanEntry] = Field(default_factory=list)


# ---------------------------------------------------------------- ports

# loxilb's port type bits (common/common.go)
PORT_REAL = 0x1
PORT_BOND_SIF = 0x2
PORT_BOND = 0x4
PORT_VLAN_SIF = 0x8
PORT_VLAN_BR = 0x10
PORT_VXLAN_SIF = 0x20
PORT_VXLAN_BR = 0x40
PORT_WG = 0x80
PORT_VTI = 0x100
PORT_IPTUN = 0x200
PORT_GRE = 0x400


class PortSoftwareInformation(WireModel):
    model_config = wire_names(os_id="osId", port_type="portType", port_prop="portProp",
                              port_active="portActive", bpf_loaded="bpfLoaded")

    os_id: int = 0  # the kernel's ifindex
    port_type: int = 0  # PORT_* bits
    port_prop: int = 0
    port_active: bool = False  # operationally up
    bpf_loaded: bool = False  # pyloxi's datapath is attached to it


class PortHardwareInformation(WireModel):
    model_config = wire_names(
        raw_mac_address="rawMacAddress", mac_address="macAddress", mtu="mtu", link="link",
        state="state", master="master", real="real", tunnel_id="tunnelId")

    raw_mac_address: list[int] = Field(default_factory=list)
    mac_address: str = ""
    mtu: int = 0
    link: bool = False  # carrier
    state: bool = False  # administratively up
    master: str = ""
    real: str = ""  # the lower device (a VLAN sub-interface's parent, a VXLAN's epIntf)
    tunnel_id: int = 0  # a VXLAN device's VNI


class PortStatisticInformation(WireModel):
    model_config = wire_names(rx_bytes="rxBytes", tx_bytes="txBytes", rx_packets="rxPackets",
                              tx_packets="txPackets", rx_errors="rxErrors", tx_errors="txErrors")

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_errors: int = 0
    tx_errors: int = 0


class PortL3Information(WireModel):
    model_config = wire_names(routed="routed", ipv4_address="IPv4Address",
                              ipv6_address="IPv6Address")

    routed: bool = False
    ipv4_address: list[str] = Field(default_factory=list)
    ipv6_address: list[str] = Field(default_factory=list)


class PortL2Information(WireModel):
    model_config = wire_names(is_pvid="isPvid", vid="vid")

    is_pvid: bool = False
    vid: int = 0


class PortEntry(WireModel):
    model_config = wire_names(
        port_name="portName", port_no="portNo", zone="zone",
        port_software_information="portSoftwareInformation",
        port_hardware_information="portHardwareInformation",
        port_statistic_information="portStatisticInformation",
        port_l3_information="portL3Information", port_l2_information="portL2Information",
        dataplane_sync="DataplaneSync")

    port_name: Name = ""
    port_no: int = 0
    zone: CounterText = ""
    port_software_information: PortSoftwareInformation = Field(
        default_factory=PortSoftwareInformation)
    port_hardware_information: PortHardwareInformation = Field(
        default_factory=PortHardwareInformation)
    port_statistic_information: PortStatisticInformation = Field(
        default_factory=PortStatisticInformation)
    port_l3_information: PortL3Information = Field(default_factory=PortL3Information)
    port_l2_information: PortL2Information = Field(default_factory=PortL2Information)
    dataplane_sync: int = 0


class PortList(WireModel):
    model_config = wire_names(port_attr="portAttr")

    port_attr: list[PortEntry] = Field(default_factory=list)
