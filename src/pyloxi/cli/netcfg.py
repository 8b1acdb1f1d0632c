"""`pyloxi create|get|delete` for the host's network configuration (loxicmd's route, ip,
neighbor, fdb, vlan, vlanmember, vxlan, vxlanpeer and port verbs, with their flags):

    pyloxi create route 192.168.212.0/24 172.17.0.254 [--proto=static]
    pyloxi delete route 192.168.212.0/24
    pyloxi create ip 192.168.0.1/24 eno7            (aliases ipv4address, ipv4, ipaddress)
    pyloxi delete ip 192.168.0.1/24 eno7
    pyloxi create neighbor 192.168.0.1 eno7 --macAddress=aa:aa:aa:aa:aa:aa   (nei, neigh)
    pyloxi delete neighbor 192.168.0.1 eno7
    pyloxi create fdb aa:bb:cc:dd:ee:ff eno7 ;  pyloxi delete fdb aa:bb:cc:dd:ee:ff eno7
    pyloxi create vlan 100 ;  pyloxi delete vlan 100
    pyloxi create vlanmember 100 eno7 [--tagged=true] ;  pyloxi delete vlanmember 100 eno7 [--tagged=true]
    pyloxi create vxlan 100 eno7 ;  pyloxi delete vxlan 100
    pyloxi create vxlanpeer 100 1.1.1.1 ;  pyloxi delete vxlanpeer 100 1.1.1.1
    pyloxi get route|ip|neighbor|fdb|vlan|vxlan|port [-o wide|json]

Arguments are checked here with the API's own value types: a bad one exits 2 with nothing sent.
"""  # noqa: E501

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import typer
from pydantic import TypeAdapter, ValidationError

from pyloxi.cli import render
from pyloxi.cli.client import client_for, path_segment, reporting, settings_of
from pyloxi.cli.groups import create_app, delete_app, get_app
from pyloxi.cli.parse import InputError
from pyloxi.model.fields import IPAddress, IPPrefix
from pyloxi.model.netcfg import (
    DevName,
    FdbList,
    IfAddress,
    IpList,
    MacAddress,
    NeighborList,
    PortEntry,
    PortList,
    RouteList,
    VlanId,
    VlanList,
    Vni,
    VxlanList,
)

T = TypeVar("T")

ROUTE_COLUMNS = ("destinationIPNet", "gateway", "flag")
ROUTE_WIDE_COLUMNS = (*ROUTE_COLUMNS, "HardwareMark", "packets", "bytes")
IP_COLUMNS = ("Device Name", "IP Address")
NEIGHBOR_COLUMNS = ("IP Address", "Device Name", "Mac Address")
FDB_COLUMNS = ("Device Name", "MAC Address")
VLAN_COLUMNS = ("Device Name", "Vlan ID", "Member")
VXLAN_COLUMNS = ("Device Name", "Vxlan ID", "endpoint interface", "Peer IP")
PORT_COLUMNS = ("index", "portname", "MAC", "link/state", "L3Info", "L2Info")
PORT_WIDE_COLUMNS = ("index", "portname", "MAC", "link/state", "mtu", "isActive/bpf",
                     "Statistics", "L3Info", "L2Info", "Sync")


def _check(type_: Any, value: Any, what: str) -> Any:
    try:
        return TypeAdapter(type_).validate_python(value, strict=True)
    except ValidationError as exc:
        raise InputError(f"invalid {what}: {exc.errors()[0]['msg']}") from None


def _int(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise InputError(f"invalid {what}: {text!r} is not a whole number")
    return int(text)


def _bool(text: str, what: str) -> bool:
    word = text.strip().lower()
    if word not in ("true", "false", "1", "0", "t", "f"):  # Go's strconv.ParseBool words
        raise InputError(f"invalid {what}: {text!r} is not true or false")
    return word in ("true", "1", "t")


def _done(message: str) -> None:
    typer.echo(message)


def _post(ctx: typer.Context, path: str, body: dict[str, Any], message: str) -> None:
    with client_for(ctx) as client:
        client.post(path, body)
    _done(message)


def _delete(ctx: typer.Context, path: str, message: str) -> None:
    with client_for(ctx) as client:
        client.delete(path)
    _done(message)


def _split_prefix(text: str, what: str) -> tuple[str, int]:
    addr, sep, bits = text.strip().partition("/")
    if not sep:
        raise InputError(f"invalid {what}: {text!r} has no /prefix-length")
    return addr, _int(bits, f"{what} prefix length")


Dev = Annotated[str, typer.Argument(help="interface name")]
# loxicmd's --tagged is a Go bool flag: `--tagged` or `--tagged=true|false`. A typer bool flag
# refuses `--tagged=true`, so these commands read it from their extra arguments (_tagged).
_TAGGED_CMD = {"allow_extra_args": True, "ignore_unknown_options": True}


def _tagged(ctx: typer.Context) -> bool:
    tagged = False
    for arg in ctx.args:
        if arg == "--tagged":
            tagged = True
        elif arg.startswith("--tagged="):
            tagged = _bool(arg.split("=", 1)[1], "--tagged")
        else:
            raise InputError(f"unexpected argument {arg!r} (only --tagged[=true|false])")
    return tagged

# ------------------------------------------------------------------ route


@create_app.command("route")
def create_route(
    ctx: typer.Context,
    destination: Annotated[str, typer.Argument(help="DestinationIPNet, e.g. 10.0.0.0/24")],
    gateway: Annotated[str, typer.Argument(help="next hop")],
    proto: Annotated[str, typer.Option("--proto", help="route protocol: static")] = "",
) -> None:
    """Add a route (as `ip route add <dst> via <gateway> [proto static]`)."""
    with reporting():
        dst = _check(IPPrefix, destination, "DestinationIPNet")
        gw = _check(IPAddress, gateway, "gateway")
        _post(ctx, "/config/route", {"destinationIPNet": dst, "gateway": gw,
                                     "protocol": proto}, f"created route {dst} via {gw}")


@delete_app.command("route")
def delete_route(
    ctx: typer.Context,
    destination: Annotated[str, typer.Argument(help="DestinationIPNet, e.g. 10.0.0.0/24")],
) -> None:
    """Delete the route to a prefix."""
    with reporting():
        dst = _check(IPPrefix, destination, "DestinationIPNet")
        addr, bits = dst.split("/")
        _delete(ctx, f"/config/route/destinationIPNet/{path_segment(addr)}/{bits}",
                f"deleted route {dst}")


@get_app.command("route")
def get_route(ctx: typer.Context) -> None:
    """List the routes of the main table."""
    with reporting():
        got = render.get_answer(ctx, "/config/route/all", RouteList)
    if got is None:
        return
    wide = settings_of(ctx).wide
    rows = [[r.destination_ip_net, r.gateway, r.flags]
            + ([r.hardware_mark, r.statistic.packets, r.statistic.bytes] if wide else [])
            for r in got.route_attr]
    render.print_table(ROUTE_WIDE_COLUMNS if wide else ROUTE_COLUMNS, rows)


# ------------------------------------------------------------------ ip


def create_ip(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="DeviceIPNet, e.g. 192.168.0.1/24")],
    dev: Dev,
) -> None:
    """Add an address to an interface."""
    with reporting():
        ip = _check(IfAddress, address, "DeviceIPNet")
        name = _check(DevName, dev, "device")
        _post(ctx, "/config/ipv4address", {"dev": name, "ipAddress": ip},
              f"created ip {ip} on {name}")


def delete_ip(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="DeviceIPNet, e.g. 192.168.0.1/24")],
    dev: Dev,
) -> None:
    """Delete an address from an interface."""
    with reporting():
        ip = _check(IfAddress, address, "DeviceIPNet")
        name = _check(DevName, dev, "device")
        addr, bits = ip.split("/")
        _delete(ctx, f"/config/ipv4address/{path_segment(addr)}/{bits}/dev/"
                     f"{path_segment(name)}", f"deleted ip {ip} on {name}")


def get_ip(ctx: typer.Context) -> None:
    """List the addresses of every interface."""
    with reporting():
        got = render.get_answer(ctx, "/config/ipv4address/all", IpList)
    if got is None:
        return
    wide = settings_of(ctx).wide
    render.print_table((*IP_COLUMNS, "Sync") if wide else IP_COLUMNS,
                       [[a.dev, ", ".join(a.ip_address)] + ([a.sync] if wide else [])
                        for a in got.ip_attr])


for _name, _hidden in (("ip", False), ("ipv4address", True), ("ipv4", True),
                       ("ipaddress", True)):
    create_app.command(_name, hidden=_hidden)(create_ip)
    delete_app.command(_name, hidden=_hidden)(delete_ip)
    if _name != "ipaddress":  # loxicmd's get has no "ipaddress" alias
        get_app.command(_name, hidden=_hidden)(get_ip)

# ------------------------------------------------------------------ neighbor


def create_neighbor(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(help="DeviceIP")],
    dev: Dev,
    mac: Annotated[str, typer.Option("--macAddress", help="aa:aa:aa:aa:aa:aa")] = "",
) -> None:
    """Add a permanent neighbour (ARP/NDP entry)."""
    with reporting():
        addr = _check(IPAddress, ip, "DeviceIP")
        name = _check(DevName, dev, "device")
        if not mac:
            raise InputError("--macAddress is required")
        hw = _check(MacAddress, mac, "--macAddress")
        _post(ctx, "/config/neighbor", {"ipAddress": addr, "dev": name, "macAddress": hw},
              f"created neighbor {addr} on {name}")


def delete_neighbor(
    ctx: typer.Context, ip: Annotated[str, typer.Argument(help="DeviceIP")], dev: Dev
) -> None:
    """Delete a neighbour."""
    with reporting():
        addr = _check(IPAddress, ip, "DeviceIP")
        name = _check(DevName, dev, "device")
        _delete(ctx, f"/config/neighbor/{path_segment(addr)}/dev/{path_segment(name)}",
                f"deleted neighbor {addr} on {name}")


def get_neighbor(ctx: typer.Context) -> None:
    """List the neighbours."""
    with reporting():
        got = render.get_answer(ctx, "/config/neighbor/all", NeighborList)
    if got is not None:
        render.print_table(NEIGHBOR_COLUMNS, [[n.ip_address, n.dev, n.mac_address]
                                              for n in got.neighbor_attr])


for _name, _hidden in (("neighbor", False), ("nei", True), ("neigh", True)):
    create_app.command(_name, hidden=_hidden)(create_neighbor)
    delete_app.command(_name, hidden=_hidden)(delete_neighbor)
    get_app.command(_name, hidden=_hidden)(get_neighbor)

# ------------------------------------------------------------------ fdb

Mac = Annotated[str, typer.Argument(help="MacAddress")]


@create_app.command("fdb")
def create_fdb(ctx: typer.Context, mac: Mac, dev: Dev) -> None:
    """Add a permanent FDB entry."""
    with reporting():
        hw = _check(MacAddress, mac, "MacAddress")
        name = _check(DevName, dev, "device")
        _post(ctx, "/config/fdb", {"dev": name, "macAddress": hw},
              f"created fdb {hw} on {name}")


@delete_app.command("fdb")
def delete_fdb(ctx: typer.Context, mac: Mac, dev: Dev) -> None:
    """Delete an FDB entry."""
    with reporting():
        hw = _check(MacAddress, mac, "MacAddress")
        name = _check(DevName, dev, "device")
        _delete(ctx, f"/config/fdb/{path_segment(hw)}/dev/{path_segment(name)}",
                f"deleted fdb {hw} on {name}")


@get_app.command("fdb")
def get_fdb(ctx: typer.Context) -> None:
    """List the FDB entries of bridge ports."""
    with reporting():
        got = render.get_answer(ctx, "/config/fdb/all", FdbList)
    if got is not None:
        render.print_table(FDB_COLUMNS, [[f.dev, f.mac_address] for f in got.fdb_attr])


# ------------------------------------------------------------------ vlan

Vid = Annotated[str, typer.Argument(help="VLAN id (2-4094)")]


def _vid(text: str) -> int:
    return int(_check(VlanId, _int(text, "Vid"), "Vid"))


@create_app.command("vlan")
def create_vlan(ctx: typer.Context, vid: Vid) -> None:
    """Create the VLAN bridge vlan<Vid>."""
    with reporting():
        v = _vid(vid)
        _post(ctx, "/config/vlan", {"vid": v}, f"created vlan {v}")


@delete_app.command("vlan")
def delete_vlan(ctx: typer.Context, vid: Vid) -> None:
    """Delete the VLAN bridge vlan<Vid>."""
    with reporting():
        v = _vid(vid)
        _delete(ctx, f"/config/vlan/{v}", f"deleted vlan {v}")


@get_app.command("vlan")
def get_vlan(ctx: typer.Context) -> None:
    """List the VLAN bridges and their members."""
    with reporting():
        got = render.get_answer(ctx, "/config/vlan/all", VlanList)
    if got is None:
        return
    wide = settings_of(ctx).wide
    rows = []
    for v in got.vlan_attr:
        members = ", ".join(f"{m.dev}({'tagged' if m.tagged else 'untagged'})"
                            for m in v.member)
        s = v.vlan_statistic
        rows.append([v.dev, v.vid, members] + ([
            f"in {s.in_packets} pkts/{s.in_bytes} B, out {s.out_packets} pkts/"
            f"{s.out_bytes} B"] if wide else []))
    render.print_table((*VLAN_COLUMNS, "Statistics") if wide else VLAN_COLUMNS, rows)


def create_vlanmember(ctx: typer.Context, vid: Vid, dev: Dev) -> None:
    """Add an interface to vlan<Vid>; --tagged[=true]: through its sub-interface <dev>.<Vid>."""
    with reporting():
        v = _vid(vid)
        name = _check(DevName, dev, "device")
        t = _tagged(ctx)
        _post(ctx, f"/config/vlan/{v}/member", {"dev": name, "tagged": t},
              f"created vlan {v} member {name} ({'tagged' if t else 'untagged'})")


def delete_vlanmember(ctx: typer.Context, vid: Vid, dev: Dev) -> None:
    """Remove an interface from vlan<Vid> (--tagged[=true]: the tagged member)."""
    with reporting():
        v = _vid(vid)
        name = _check(DevName, dev, "device")
        t = _tagged(ctx)
        _delete(ctx, f"/config/vlan/{v}/member/{path_segment(name)}/tagged/"
                     f"{'true' if t else 'false'}", f"deleted vlan {v} member {name}")


for _name, _hidden in (("vlanmember", False), ("vlanMember", True), ("vlan-member", True),
                       ("vlan_member", True)):
    create_app.command(_name, hidden=_hidden, context_settings=_TAGGED_CMD)(create_vlanmember)
    delete_app.command(_name, hidden=_hidden, context_settings=_TAGGED_CMD)(delete_vlanmember)

# ------------------------------------------------------------------ vxlan

VniArg = Annotated[str, typer.Argument(help="VXLAN id (1-16777215)")]


def _vni(text: str) -> int:
    return int(_check(Vni, _int(text, "VxlanID"), "VxlanID"))


@create_app.command("vxlan")
def create_vxlan(ctx: typer.Context, vni: VniArg,
                 dev: Annotated[str, typer.Argument(help="EndpointDeviceName")]) -> None:
    """Create the VXLAN device vxlan<VxlanID> over an interface (its IPv4 address: source)."""
    with reporting():
        v = _vni(vni)
        name = _check(DevName, dev, "EndpointDeviceName")
        _post(ctx, "/config/tunnel/vxlan", {"epIntf": name, "vxlanID": v},
              f"created vxlan {v} on {name}")


@delete_app.command("vxlan")
def delete_vxlan(ctx: typer.Context, vni: VniArg) -> None:
    """Delete the VXLAN device vxlan<VxlanID>."""
    with reporting():
        v = _vni(vni)
        _delete(ctx, f"/config/tunnel/vxlan/{v}", f"deleted vxlan {v}")


@get_app.command("vxlan")
def get_vxlan(ctx: typer.Context) -> None:
    """List the VXLAN devices and their peers."""
    with reporting():
        got = render.get_answer(ctx, "/config/tunnel/vxlan/all", VxlanList)
    if got is not None:
        render.print_table(VXLAN_COLUMNS, [[v.vxlan_name, v.vxlan_id, v.ep_intf,
                                             ", ".join(v.peer_ip)] for v in got.vxlan_attr])


Peer = Annotated[str, typer.Argument(help="PeerIP")]


def create_vxlanpeer(ctx: typer.Context, vni: VniArg, peer: Peer) -> None:
    """Add a peer (remote VTEP) to vxlan<VxlanID>."""
    with reporting():
        v = _vni(vni)
        ip = _check(IPAddress, peer, "PeerIP")
        _post(ctx, f"/config/tunnel/vxlan/{v}/peer", {"peerIP": ip},
              f"created vxlan {v} peer {ip}")


def delete_vxlanpeer(ctx: typer.Context, vni: VniArg, peer: Peer) -> None:
    """Remove a peer from vxlan<VxlanID>."""
    with reporting():
        v = _vni(vni)
        ip = _check(IPAddress, peer, "PeerIP")
        _delete(ctx, f"/config/tunnel/vxlan/{v}/peer/{path_segment(ip)}",
                f"deleted vxlan {v} peer {ip}")


for _name, _hidden in (("vxlanpeer", False), ("vxlanPeer", True), ("vxlan-peer", True),
                       ("vxlan_peer", True)):
    create_app.command(_name, hidden=_hidden)(create_vxlanpeer)
    delete_app.command(_name, hidden=_hidden)(delete_vxlanpeer)

# ------------------------------------------------------------------ port


def _l3(p: PortEntry) -> str:
    l3 = p.port_l3_information
    return (f"Routed: {str(l3.routed).lower()} IPv4: {', '.join(l3.ipv4_address) or '-'} "
            f"IPv6: {', '.join(l3.ipv6_address) or '-'}")


def _l2(p: PortEntry) -> str:
    l2 = p.port_l2_information
    return f"IsPVID: {str(l2.is_pvid).lower()} VID: {l2.vid}"


@get_app.command("port")
def get_port(ctx: typer.Context) -> None:
    """List the interfaces: MAC, link/state, addresses, VLAN; -o wide: MTU, whether pyloxi's
    datapath is attached, counters."""
    with reporting():
        got = render.get_answer(ctx, "/config/port/all", PortList)
    if got is None:
        return
    wide = settings_of(ctx).wide
    rows = []
    for p in got.port_attr:
        hw, sw, st = (p.port_hardware_information, p.port_software_information,
                      p.port_statistic_information)
        head = [p.port_no, p.port_name, hw.mac_address,
                f"{str(hw.link).lower()}/{str(hw.state).lower()}"]
        if wide:
            rows.append([*head, hw.mtu,
                         f"{str(sw.port_active).lower()}/{str(sw.bpf_loaded).lower()}",
                         f"rx/tx bytes {st.rx_bytes}/{st.tx_bytes} packets "
                         f"{st.rx_packets}/{st.tx_packets} errors {st.rx_errors}/{st.tx_errors}",
                         _l3(p), _l2(p), p.dataplane_sync])
        else:
            rows.append([*head, _l3(p), _l2(p)])
    render.print_table(PORT_WIDE_COLUMNS if wide else PORT_COLUMNS, rows)
