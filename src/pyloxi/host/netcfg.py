"""The host's network configuration through netlink (pyroute2): what /config/port, route,
ipv4address, neighbor, fdb, vlan and tunnel/vxlan read and change (api/netcfg.py).

Everything is read from the kernel at each call, so what other tools (`ip`, `bridge`) changed
shows up. Each change either happens whole or not at all: values are checked first (the device
exists, the VLAN bridge exists ...), and a step that fails after an earlier one succeeded undoes
the earlier one. A kernel refusal comes back as PyloxiError with the kernel's reason in Go's
spelling ("file exists", "no such device"), its status chosen as loxilb's substring rules would
choose it from that text (handler/common.go), with the request's own mistakes (EINVAL,
ENETUNREACH ...) as 400 rather than loxilb's 500.

Names follow loxilb (api/loxinlp/nlp.go): VLAN bridges are `vlan<vid>`, a tagged member of VLAN
vid is the 802.1Q sub-interface `<dev>.<vid>` enslaved to it, VXLAN devices are `vxlan<vni>`
(UDP port 8472, learning, the first IPv4 address of epIntf as source) and a VXLAN peer is an
all-zeros FDB entry pointing at the peer.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyloxi.host.netlink import _Netlink
from pyloxi.model.errors import Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.netcfg import (
    PORT_BOND,
    PORT_BOND_SIF,
    PORT_GRE,
    PORT_IPTUN,
    PORT_REAL,
    PORT_VLAN_BR,
    PORT_VLAN_SIF,
    PORT_VTI,
    PORT_VXLAN_BR,
    PORT_WG,
    FDBEntry,
    Ipv4AddressEntry,
    Ipv4AddressGetEntry,
    NeighborEntry,
    PortEntry,
    PortHardwareInformation,
    PortL2Information,
    PortL3Information,
    PortSoftwareInformation,
    PortStatisticInformation,
    RouteEntry,
    RouteGetEntry,
    VlanGetEntry,
    VlanMemberEntry,
    VlanStatistic,
    VxlanEntry,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

VXLAN_PORT = 8472  # loxilb's (and Linux's historical) VXLAN UDP port
VXLAN_OVERHEAD = 50  # outer IPv4 + UDP + VXLAN + inner Ethernet headers
ZONE = "llb"  # loxilb's default zone name
MAIN_TABLE = 254
RTPROT_BOOT, RTPROT_STATIC = 3, 4
RTN_UNICAST = 1
NUD_INCOMPLETE, NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x01, 0x20, 0x40, 0x80
NTF_SELF, NTF_MASTER, NTF_PROXY = 0x02, 0x04, 0x08
AF_BRIDGE = 7
IFF_UP = 0x1
_PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static"}
_VLAN_BRIDGE = re.compile(r"^vlan(\d+)$")
_KIND_TYPES = {"bridge": PORT_VLAN_BR, "vlan": PORT_VLAN_SIF, "vxlan": PORT_VXLAN_BR,
               "bond": PORT_BOND, "wireguard": PORT_WG, "vti": PORT_VTI, "ipip": PORT_IPTUN,
               "gre": PORT_GRE, "gretap": PORT_GRE}
ZERO_MAC = "00:00:00:00:00:00"

# The kernel's reasons, by what they say about the request (loxilb: "exists" -> 409,
# "no such"/"not found" -> 404, "invalid " -> 400, anything else 500).
_STATUS = {errno.EEXIST: 409, errno.EBUSY: 409, errno.ENOENT: 404, errno.ESRCH: 404,
           errno.ENODEV: 404, errno.ENXIO: 404, errno.EINVAL: 400, errno.ERANGE: 400,
           errno.ENETUNREACH: 400, errno.EADDRNOTAVAIL: 400, errno.EAFNOSUPPORT: 400,
           errno.E2BIG: 400}


def kernel_error(what: str, exc: NetlinkError) -> PyloxiError:
    """A netlink refusal as loxilb's error: `<what>: <the kernel's reason>`."""
    code = exc.code or 0
    reason = os.strerror(code).lower() if code > 0 else str(exc)
    return PyloxiError(_STATUS.get(code, 500), f"{what}: {reason}")


@dataclass(frozen=True, slots=True)
class Link:
    """What the listings need of one interface (an RTM_NEWLINK message)."""

    index: int
    name: str
    kind: str
    master: int
    lower: int  # IFLA_LINK: a VLAN sub-interface's parent
    flags: int
    oper_up: bool
    carrier: bool
    mtu: int
    mac: str
    stats: dict[str, int]
    vlan_id: int
    vni: int
    vxlan_link: int
    vxlan_local: str

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def _link(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
    data = info.get_attr("IFLA_INFO_DATA") if info else None

    def datum(name: str, default: Any = 0) -> Any:
        if data is None or isinstance(data, (str, bytes)):
            return default
        value = data.get_attr(name)
        return default if value is None else value

    stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS") or {}
    return Link(
        index=msg["index"], name=msg.get_attr("IFLA_IFNAME") or "", kind=kind,
        master=msg.get_attr("IFLA_MASTER") or 0, lower=msg.get_attr("IFLA_LINK") or 0,
        flags=msg["flags"], oper_up=msg.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN"),
        carrier=bool(msg.get_attr("IFLA_CARRIER")), mtu=msg.get_attr("IFLA_MTU") or 0,
        mac=msg.get_attr("IFLA_ADDRESS") or "",
        stats={k: int(stats.get(k, 0) or 0) for k in (
            "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors")},
        vlan_id=datum("IFLA_VLAN_ID") if kind == "vlan" else 0,
        vni=datum("IFLA_VXLAN_ID") if kind == "vxlan" else 0,
        vxlan_link=datum("IFLA_VXLAN_LINK") if kind == "vxlan" else 0,
        vxlan_local=datum("IFLA_VXLAN_LOCAL", "") if kind == "vxlan" else "")


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class HostNetConfig:
    """pyloxi.api.netcfg.NetConfig on this network namespace's kernel tables.

    `attached()` gives the ifindexes the datapath is attached to (the ports' bpfLoaded).
    All netlink work runs on one worker thread with its own socket (pyroute2's sync API may not
    run on a thread with a running event loop); the thread is started by the first call, so it
    lives in the namespace of the thread that made it (the daemon enters its namespace first).
    """

    def __init__(self, attached: Callable[[], Collection[int]] = tuple) -> None:
        self._nl = _Netlink()
        self._attached = attached

    def _call(self, fn: Callable[[IPRoute], T]) -> T:
        return self._nl.call(fn)

    # ------------------------------------------------------------ helpers (worker thread)

    @staticmethod
    def _links(ipr: IPRoute) -> list[Link]:
        return sorted((_link(m) for m in ipr.get_links()), key=lambda link: link.index)

    @staticmethod
    def _by_name(ipr: IPRoute, name: str) -> Link | None:
        try:
            found = ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise kernel_error(f"interface {name}", exc) from None
        return _link(found[0]) if found else None

    def _device(self, ipr: IPRoute, name: str, field: str = "dev") -> Link:
        """The interface a request names: 400 when there is none."""
        link = self._by_name(ipr, name)
        if link is None:
            raise InvalidInput(f"invalid {field}: no such device {name}")
        return link

    @staticmethod
    def _do(what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except NetlinkError as exc:
            raise kernel_error(what, exc) from None

    @staticmethod
    def _undo(what: str, fn: Callable[[], Any]) -> None:
        """Roll back a step after a later one failed: its own failure is only logged (the
        later failure is what the client is told)."""
        try:
            fn()
        except NetlinkError as exc:
            log.warning("undo %s: %s", what, exc)

    @staticmethod
    def _addresses(ipr: IPRoute, index: int | None = None) -> list[tuple[int, str, int]]:
        """(ifindex, "addr/len", family) of every address (of one interface)."""
        rows = ipr.get_addr(index=index) if index is not None else ipr.get_addr()
        out = []
        for a in rows:
            addr = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            if addr:
                out.append((a["index"], f"{addr}/{a['prefixlen']}", a["family"]))
        return out

    # ------------------------------------------------------------ ports

    def ports(self) -> list[PortEntry]:
        attached = set(self._attached())

        def read(ipr: IPRoute) -> list[PortEntry]:
            links = self._links(ipr)
            names = {link.index: link.name for link in links}
            kinds = {link.index: link.kind for link in links}
            addrs: dict[int, tuple[list[str], list[str]]] = {}
            for index, addr, family in self._addresses(ipr):
                v4, v6 = addrs.setdefault(index, ([], []))
                (v6 if family == socket.AF_INET6 else v4).append(addr)
            return [self._port(link, names, kinds, addrs.get(link.index, ([], [])),
                               link.index in attached) for link in links]

        return self._call(read)

    @staticmethod
    def _port(link: Link, names: dict[int, str], kinds: dict[int, str],
              addrs: tuple[list[str], list[str]], bpf: bool) -> PortEntry:
        if link.name == "lo":
            ptype = 0
        else:
            ptype = _KIND_TYPES.get(link.kind, PORT_REAL)
            if kinds.get(link.master) == "bond":
                ptype |= PORT_BOND_SIF
        vid, pvid = 0, False
        if link.kind == "vlan":
            vid = link.vlan_id
        elif link.kind == "bridge" and (m := _VLAN_BRIDGE.match(link.name)):
            vid, pvid = int(m.group(1)), True
        real = names.get(link.vxlan_link if link.kind == "vxlan" else
                         link.lower if link.kind == "vlan" else 0, "")
        raw = [int(b, 16) for b in link.mac.split(":")] if len(link.mac) == 17 else []
        v4, v6 = addrs
        s = link.stats
        return PortEntry(
            port_name=link.name, port_no=link.index, zone=ZONE,
            port_software_information=PortSoftwareInformation(
                os_id=link.index, port_type=ptype, port_active=link.oper_up, bpf_loaded=bpf),
            port_hardware_information=PortHardwareInformation(
                raw_mac_address=raw, mac_address=link.mac, mtu=link.mtu, link=link.carrier,
                state=link.up, master=names.get(link.master, ""), real=real,
                tunnel_id=link.vni),
            port_statistic_information=PortStatisticInformation(
                rx_bytes=s["rx_bytes"], tx_bytes=s["tx_bytes"], rx_packets=s["rx_packets"],
                tx_packets=s["tx_packets"], rx_errors=s["rx_errors"],
                tx_errors=s["tx_errors"]),
            port_l3_information=PortL3Information(routed=bool(v4 or v6), ipv4_address=v4,
                                                  ipv6_address=v6),
            port_l2_information=PortL2Information(is_pvid=pvid, vid=vid))

    # ------------------------------------------------------------ routes

    def routes(self) -> list[RouteGetEntry]:
        def read(ipr: IPRoute) -> list[RouteGetEntry]:
            out = []
            for family, full in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
                try:
                    rows = ipr.get_routes(family=family, table=MAIN_TABLE)
                except NetlinkError:  # IPv6 disabled
                    continue
                for r in rows:
                    if r["type"] != RTN_UNICAST:
                        continue
                    dst = r.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6
                                                    else "0.0.0.0")
                    gws = [g for g in [r.get_attr("RTA_GATEWAY")] if g]
                    for hop in r.get_attr("RTA_MULTIPATH") or []:
                        if hop.get_attr("RTA_GATEWAY"):
                            gws.append(hop.get_attr("RTA_GATEWAY"))
                    flags = ["Ind"] if gws else ["Interface"]
                    if r["dst_len"] == full:
                        flags.append("Host")
                    out.append(RouteGetEntry(
                        destination_ip_net=f"{dst}/{r['dst_len']}", gateway=",".join(gws),
                        protocol=_PROTOCOLS.get(r["proto"], str(r["proto"])),
                        flags=" ".join(flags)))
            return out

        return self._call(read)

    def add_route(self, entry: RouteEntry) -> None:
        proto = RTPROT_STATIC if entry.protocol == "static" else RTPROT_BOOT
        what = f"route {entry.destination_ip_net} via {entry.gateway}"
        self._call(lambda ipr: self._do(what, lambda: ipr.route(
            "add", dst=entry.destination_ip_net, gateway=entry.gateway, proto=proto,
            table=MAIN_TABLE)))

    def delete_route(self, prefix: str) -> None:
        self._call(lambda ipr: self._do(f"route {prefix}", lambda: ipr.route(
            "del", dst=prefix, family=_family(prefix), table=MAIN_TABLE)))

    # ------------------------------------------------------------ addresses

    def addresses(self) -> list[Ipv4AddressGetEntry]:
        def read(ipr: IPRoute) -> list[Ipv4AddressGetEntry]:
            names = {link.index: link.name for link in self._links(ipr)}
            by_dev: dict[int, list[str]] = {}
            for index, addr, _ in self._addresses(ipr):
                by_dev.setdefault(index, []).append(addr)
            return [Ipv4AddressGetEntry(dev=names.get(i, str(i)), ip_address=a)
                    for i, a in sorted(by_dev.items())]

        return self._call(read)

    def add_address(self, entry: Ipv4AddressEntry) -> None:
        iface = ipaddress.ip_interface(entry.ip_address)

        def change(ipr: IPRoute) -> None:
            link = self._device(ipr, entry.dev)
            what = f"address {entry.ip_address} on {entry.dev}"
            self._do(what, lambda: ipr.addr("add", index=link.index, address=str(iface.ip),
                                             prefixlen=iface.network.prefixlen))
            if not link.up:  # loxilb brings the interface up with its first address
                try:
                    ipr.link("set", index=link.index, state="up")
                except NetlinkError as exc:
                    self._undo(what, lambda: ipr.addr("del", index=link.index,
                                                      address=str(iface.ip),
                                                      prefixlen=iface.network.prefixlen))
                    raise kernel_error(f"{entry.dev} up", exc) from None

        self._call(change)

    def delete_address(self, address: str, dev: str) -> None:
        iface = ipaddress.ip_interface(address)

        def change(ipr: IPRoute) -> None:
            link = self._device(ipr, dev, "if_name")
            if address not in {a for _, a, _ in self._addresses(ipr, link.index)}:
                raise NotFound(f"address {address} not found on {dev}")
            self._do(f"address {address} on {dev}", lambda: ipr.addr(
                "del", index=link.index, address=str(iface.ip),
                prefixlen=iface.network.prefixlen))

        self._call(change)

    # ------------------------------------------------------------ neighbours

    def neighbors(self) -> list[NeighborEntry]:
        def read(ipr: IPRoute) -> list[NeighborEntry]:
            names = {link.index: link.name for link in self._links(ipr)}
            out = []
            for family in (socket.AF_INET, socket.AF_INET6):
                try:
                    rows = ipr.get_neighbours(family=family)
                except NetlinkError:
                    continue
                for n in rows:
                    mac, ip = n.get_attr("NDA_LLADDR"), n.get_attr("NDA_DST")
                    if (not mac or not ip or n["flags"] & NTF_PROXY
                            or n["state"] & (NUD_NOARP | NUD_FAILED | NUD_INCOMPLETE)
                            or n["ifindex"] not in names):
                        continue
                    out.append(NeighborEntry(ip_address=ip, dev=names[n["ifindex"]],
                                             mac_address=mac))
            return out

        return self._call(read)

    def add_neighbor(self, entry: NeighborEntry) -> None:
        def change(ipr: IPRoute) -> None:
            link = self._device(ipr, entry.dev)
            self._do(f"neighbor {entry.ip_address} on {entry.dev}", lambda: ipr.neigh(
                "add", dst=entry.ip_address, lladdr=entry.mac_address, ifindex=link.index,
                family=_family(entry.ip_address), state=NUD_PERMANENT))

        self._call(change)

    def delete_neighbor(self, ip: str, dev: str) -> None:
        def change(ipr: IPRoute) -> None:
            link = self._device(ipr, dev, "if_name")
            self._do(f"neighbor {ip} on {dev}", lambda: ipr.neigh(
                "del", dst=ip, ifindex=link.index, family=_family(ip)))

        self._call(change)

    # ------------------------------------------------------------ FDB

    @staticmethod
    def _fdb_rows(ipr: IPRoute, index: int | None = None) -> list[Any]:
        rows = list(ipr.get_neighbours(family=AF_BRIDGE))
        return [n for n in rows if index is None or n["ifindex"] == index]

    def fdbs(self) -> list[FDBEntry]:
        def read(ipr: IPRoute) -> list[FDBEntry]:
            ports = {link.index: link.name for link in self._links(ipr) if link.master}
            seen: dict[tuple[str, str], None] = {}
            for n in self._fdb_rows(ipr):
                mac = n.get_attr("NDA_LLADDR")
                if mac and n["ifindex"] in ports:  # loxilb: the entries of bridge ports
                    seen.setdefault((ports[n["ifindex"]], mac), None)
            return [FDBEntry(dev=dev, mac_address=mac) for dev, mac in seen]

        return self._call(read)

    def add_fdb(self, entry: FDBEntry) -> None:
        def change(ipr: IPRoute) -> None:
            link = self._device(ipr, entry.dev)
            if link.master:
                # a bridge port: a static entry in its bridge's table, which is what makes the
                # bridge send that MAC to this port (loxilb's NTF_SELF entry would only add the
                # address to the port's own unicast filter)
                flags, state = NTF_MASTER, NUD_NOARP
            else:
                flags, state = NTF_SELF, NUD_PERMANENT
            self._do(f"fdb {entry.mac_address} on {entry.dev}", lambda: ipr.neigh(
                "append", family=AF_BRIDGE, ifindex=link.index, lladdr=entry.mac_address,
                state=state, flags=flags))

        self._call(change)

    def delete_fdb(self, mac: str, dev: str) -> None:
        def change(ipr: IPRoute) -> None:
            link = self._device(ipr, dev, "if_name")
            rows = [n for n in self._fdb_rows(ipr, link.index)
                    if n.get_attr("NDA_LLADDR") == mac]
            if not rows:
                raise NotFound(f"fdb entry {mac} not found on {dev}")
            # the bridge's entry if there is one (what add_fdb makes on a bridge port)
            # (a dumped bridge entry says so with NDA_MASTER, its flags are 0)
            master = any(n.get_attr("NDA_MASTER") or n["flags"] & NTF_MASTER for n in rows)
            flags = NTF_MASTER if master else NTF_SELF
            self._do(f"fdb {mac} on {dev}", lambda: ipr.neigh(
                "del", family=AF_BRIDGE, ifindex=link.index, lladdr=mac, flags=flags))

        self._call(change)

    # ------------------------------------------------------------ VLAN

    def vlans(self) -> list[VlanGetEntry]:
        def read(ipr: IPRoute) -> list[VlanGetEntry]:
            links = self._links(ipr)
            names = {link.index: link.name for link in links}
            out = []
            for br in links:
                m = _VLAN_BRIDGE.match(br.name)
                if br.kind != "bridge" or m is None:
                    continue
                vid = int(m.group(1))
                members = [self._member(link, vid, names) for link in links
                           if link.master == br.index]
                s = br.stats
                out.append(VlanGetEntry(vid=vid, dev=br.name, member=members,
                                        vlan_statistic=VlanStatistic(
                                            in_bytes=s["rx_bytes"], in_packets=s["rx_packets"],
                                            out_bytes=s["tx_bytes"],
                                            out_packets=s["tx_packets"])))
            return out

        return self._call(read)

    @staticmethod
    def _member(link: Link, vid: int, names: dict[int, str]) -> VlanMemberEntry:
        """A port of vlan<vid>: a tagged member is shown by its parent's name (as the client
        named it when adding it, and names it to remove it)."""
        if link.kind == "vlan" and link.vlan_id == vid and link.lower in names:
            return VlanMemberEntry(dev=names[link.lower], tagged=True)
        return VlanMemberEntry(dev=link.name, tagged=False)

    def _vlan_bridge(self, ipr: IPRoute, vid: int) -> Link:
        br = self._by_name(ipr, f"vlan{vid}")
        if br is None or br.kind != "bridge":
            raise NotFound(f"vlan {vid} not found (no bridge vlan{vid})")
        return br

    def add_vlan(self, vid: int) -> None:
        name = f"vlan{vid}"

        def change(ipr: IPRoute) -> None:
            if self._by_name(ipr, name) is not None:
                raise Conflict(f"vlan {vid}: {name} already exists")
            self._do(f"vlan {vid}", lambda: ipr.link("add", ifname=name, kind="bridge"))
            try:
                ipr.link("set", ifname=name, state="up")
            except NetlinkError as exc:
                self._undo(name, lambda: ipr.link("del", ifname=name))
                raise kernel_error(f"vlan {vid} up", exc) from None

        self._call(change)

    def delete_vlan(self, vid: int) -> None:
        def change(ipr: IPRoute) -> None:
            br = self._vlan_bridge(ipr, vid)
            # the tagged members' sub-interfaces exist only for this VLAN: they go with it
            subs = [link for link in self._links(ipr) if link.master == br.index
                    and link.kind == "vlan" and link.vlan_id == vid]
            self._do(f"vlan {vid}", lambda: ipr.link("del", index=br.index))
            for sub in subs:
                try:
                    ipr.link("del", index=sub.index)
                except NetlinkError as exc:  # the VLAN is gone: that is what was asked
                    log.warning("vlan %d: removing %s: %s", vid, sub.name, exc)

        self._call(change)

    def add_vlan_member(self, vid: int, dev: str, tagged: bool) -> None:
        def change(ipr: IPRoute) -> None:
            br = self._vlan_bridge(ipr, vid)
            parent = self._device(ipr, dev)
            what = f"vlan {vid} member {dev}"
            if not tagged:
                self._enslave(ipr, parent, br, what)
                return
            sub = f"{dev}.{vid}"
            if len(sub) > 15:
                raise InvalidInput(f"invalid dev: {sub}, its VLAN sub-interface's name, is "
                                   "longer than 15 characters")
            existing = self._by_name(ipr, sub)
            if existing is not None:
                raise Conflict(f"{what}: {sub} already exists" + (
                    f" (a member of vlan{vid})" if existing.master == br.index else ""))
            self._do(f"{what}: {sub}", lambda: ipr.link(
                "add", ifname=sub, kind="vlan", link=parent.index, vlan_id=vid))
            made = self._by_name(ipr, sub)
            assert made is not None
            try:
                self._enslave(ipr, made, br, what)
            except PyloxiError:
                self._undo(sub, lambda: ipr.link("del", index=made.index))
                raise

        self._call(change)

    def _enslave(self, ipr: IPRoute, link: Link, br: Link, what: str) -> None:
        if link.master == br.index:
            raise Conflict(f"{what}: {link.name} is already a member of {br.name}")
        if link.master:
            raise Conflict(f"{what}: {link.name} is already a port of another device "
                           "(untagged in one VLAN only)")
        try:
            ipr.link("set", index=link.index, master=br.index)
            if not link.up:
                ipr.link("set", index=link.index, state="up")
        except NetlinkError as exc:
            self._undo(what, lambda: ipr.link("set", index=link.index, master=0))
            raise kernel_error(what, exc) from None

    def delete_vlan_member(self, vid: int, dev: str, tagged: bool) -> None:
        def change(ipr: IPRoute) -> None:
            br = self._vlan_bridge(ipr, vid)
            parent = self._device(ipr, dev, "if_name")
            what = f"vlan {vid} member {dev}"
            if tagged:
                sub = self._by_name(ipr, f"{dev}.{vid}")
                if sub is None or sub.master != br.index or sub.lower != parent.index:
                    raise NotFound(f"{what}: tagged member not found")
                self._do(what, lambda: ipr.link("del", index=sub.index))
            else:
                if parent.master != br.index:
                    raise NotFound(f"{what}: untagged member not found")
                self._do(what, lambda: ipr.link("set", index=parent.index, master=0))

        self._call(change)

    # ------------------------------------------------------------ VXLAN

    def vxlans(self) -> list[VxlanEntry]:
        def read(ipr: IPRoute) -> list[VxlanEntry]:
            links = self._links(ipr)
            names = {link.index: link.name for link in links}
            vx = [link for link in links if link.kind == "vxlan"]
            peers: dict[int, list[str]] = {link.index: [] for link in vx}
            if vx:
                for n in self._fdb_rows(ipr):
                    # the configured peers: the all-zeros entry's remotes (learned entries
                    # name the same VTEPs per MAC, and stay until they age out)
                    dst = n.get_attr("NDA_DST")
                    if (dst and n["ifindex"] in peers and n.get_attr("NDA_LLADDR") == ZERO_MAC
                            and dst not in peers[n["ifindex"]]):
                        peers[n["ifindex"]].append(dst)
            return [VxlanEntry(vxlan_name=link.name, ep_intf=names.get(link.vxlan_link, ""),
                               vxlan_id=link.vni, peer_ip=peers[link.index]) for link in vx]

        return self._call(read)

    def _vxlan(self, ipr: IPRoute, vni: int) -> Link:
        link = self._by_name(ipr, f"vxlan{vni}")
        if link is None or link.kind != "vxlan":
            raise NotFound(f"vxlan {vni} not found (no device vxlan{vni})")
        return link

    def add_vxlan(self, vni: int, ep_intf: str) -> None:
        name = f"vxlan{vni}"

        def change(ipr: IPRoute) -> None:
            if self._by_name(ipr, name) is not None:
                raise Conflict(f"vxlan {vni}: {name} already exists")
            ep = self._device(ipr, ep_intf, "epIntf")
            local = [a.split("/")[0] for _, a, family in self._addresses(ipr, ep.index)
                     if family == socket.AF_INET]
            if not local:
                raise InvalidInput(f"invalid epIntf: {ep_intf} has no IPv4 address")
            # loxilb sets MTU 9000 (a jumbo underlay); here the device fits its underlay
            mtu = max(ep.mtu - VXLAN_OVERHEAD, 68)
            self._do(f"vxlan {vni}", lambda: ipr.link(
                "add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_link=ep.index,
                vxlan_local=local[0], vxlan_port=VXLAN_PORT, vxlan_learning=1, mtu=mtu))
            try:
                ipr.link("set", ifname=name, state="up")
            except NetlinkError as exc:
                self._undo(name, lambda: ipr.link("del", ifname=name))
                raise kernel_error(f"vxlan {vni} up", exc) from None

        self._call(change)

    def delete_vxlan(self, vni: int) -> None:
        def change(ipr: IPRoute) -> None:
            link = self._vxlan(ipr, vni)
            self._do(f"vxlan {vni}", lambda: ipr.link("del", index=link.index))

        self._call(change)

    def _peer(self, command: str, vni: int, peer_ip: str) -> None:
        def change(ipr: IPRoute) -> None:
            link = self._vxlan(ipr, vni)
            known = {n.get_attr("NDA_DST") for n in self._fdb_rows(ipr, link.index)
                     if n.get_attr("NDA_LLADDR") == ZERO_MAC}
            # the kernel answers a delete of an unknown remote with success: say it here
            if command == "del" and peer_ip not in known:
                raise NotFound(f"vxlan {vni} peer {peer_ip} not found")
            self._do(f"vxlan {vni} peer {peer_ip}", lambda: ipr.neigh(
                command, family=AF_BRIDGE, ifindex=link.index, lladdr=ZERO_MAC, dst=peer_ip,
                state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF))

        self._call(change)

    def add_vxlan_peer(self, vni: int, peer_ip: str) -> None:
        self._peer("append", vni, peer_ip)

    def delete_vxlan_peer(self, vni: int, peer_ip: str) -> None:
        self._peer("del", vni, peer_ip)

