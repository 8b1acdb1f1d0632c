"""An in-memory pyloxi.api.netcfg.NetConfig: interfaces, addresses, routes, neighbours, FDB,
VLAN bridges and VXLAN devices as dictionaries, refusing what the kernel refuses with the same
errors as pyloxi.host.netcfg (so the API's answers can be checked without root)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pyloxi.model.errors import Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.netcfg import (
    PORT_REAL,
    PORT_VLAN_BR,
    PORT_VXLAN_BR,
    FDBEntry,
    Ipv4AddressEntry,
    Ipv4AddressGetEntry,
    NeighborEntry,
    PortEntry,
    PortHardwareInformation,
    PortL3Information,
    PortSoftwareInformation,
    RouteEntry,
    RouteGetEntry,
    VlanGetEntry,
    VlanMemberEntry,
    VxlanEntry,
)


@dataclass
class Dev:
    name: str
    index: int
    kind: str = ""
    master: str = ""
    lower: str = ""  # vlan sub-interface parent, vxlan epIntf
    vid: int = 0
    vni: int = 0
    addrs: list[str] = field(default_factory=list)
    fdb: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)


class FakeNetConfig:
    def __init__(self, *names: str, vlan_support: bool = True) -> None:
        self.devs: dict[str, Dev] = {}
        self.routes_: dict[str, tuple[str, str]] = {}  # prefix -> (gateway, protocol)
        self.neigh: dict[tuple[str, str], str] = {}  # (ip, dev) -> mac
        self.attached: set[str] = set()
        self.vlan_support = vlan_support  # False: the kernel has no 802.1Q (EOPNOTSUPP)
        for name in ("lo", *names):
            self._new(name)

    def _new(self, name: str, **kw: object) -> Dev:
        dev = Dev(name, max((d.index for d in self.devs.values()), default=0) + 1,
                  **kw)  # type: ignore[arg-type]
        self.devs[name] = dev
        return dev

    def state(self) -> tuple[object, ...]:
        """Everything, to compare before and after a refused request."""
        return (repr(self.devs), dict(self.routes_), dict(self.neigh))

    def _dev(self, name: str, field_: str = "dev") -> Dev:
        if name not in self.devs:
            raise InvalidInput(f"invalid {field_}: no such device {name}")
        return self.devs[name]

    # --- ports
    def ports(self) -> list[PortEntry]:
        types = {"bridge": PORT_VLAN_BR, "vxlan": PORT_VXLAN_BR}
        return [PortEntry(
            port_name=d.name, port_no=d.index, zone="llb",
            port_software_information=PortSoftwareInformation(
                os_id=d.index, port_type=types.get(d.kind, PORT_REAL), port_active=True,
                bpf_loaded=d.name in self.attached),
            port_hardware_information=PortHardwareInformation(
                mac_address=f"02:00:00:00:00:{d.index:02x}", mtu=1500, link=True, state=True,
                master=d.master, real=d.lower, tunnel_id=d.vni),
            port_l3_information=PortL3Information(
                routed=bool(d.addrs), ipv4_address=[a for a in d.addrs if ":" not in a],
                ipv6_address=[a for a in d.addrs if ":" in a]))
            for d in self.devs.values()]

    # --- routes
    def routes(self) -> list[RouteGetEntry]:
        return [RouteGetEntry(destination_ip_net=p, gateway=g, protocol=proto or "boot",
                              flags="Ind") for p, (g, proto) in self.routes_.items()]

    def add_route(self, entry: RouteEntry) -> None:
        p = entry.destination_ip_net
        if p in self.routes_:
            raise PyloxiError(409, f"route {p} via {entry.gateway}: file exists")
        self.routes_[p] = (entry.gateway, entry.protocol)

    def delete_route(self, prefix: str) -> None:
        if self.routes_.pop(prefix, None) is None:
            raise PyloxiError(404, f"route {prefix}: no such process")

    # --- addresses
    def addresses(self) -> list[Ipv4AddressGetEntry]:
        return [Ipv4AddressGetEntry(dev=d.name, ip_address=list(d.addrs))
                for d in self.devs.values() if d.addrs]

    def add_address(self, entry: Ipv4AddressEntry) -> None:
        dev = self._dev(entry.dev)
        if entry.ip_address in dev.addrs:
            raise PyloxiError(409, f"address {entry.ip_address} on {dev.name}: file exists")
        dev.addrs.append(entry.ip_address)

    def delete_address(self, address: str, dev: str) -> None:
        d = self._dev(dev, "if_name")
        if address not in d.addrs:
            raise NotFound(f"address {address} not found on {dev}")
        d.addrs.remove(address)

    # --- neighbours
    def neighbors(self) -> list[NeighborEntry]:
        return [NeighborEntry(ip_address=ip, dev=dev, mac_address=mac)
                for (ip, dev), mac in self.neigh.items()]

    def add_neighbor(self, entry: NeighborEntry) -> None:
        self._dev(entry.dev)
        key = (entry.ip_address, entry.dev)
        if key in self.neigh:
            raise PyloxiError(409, f"neighbor {entry.ip_address} on {entry.dev}: file exists")
        self.neigh[key] = entry.mac_address

    def delete_neighbor(self, ip: str, dev: str) -> None:
        self._dev(dev, "if_name")
        if self.neigh.pop((ip, dev), None) is None:
            raise PyloxiError(404, f"neighbor {ip} on {dev}: no such file or directory")

    # --- fdb
    def fdbs(self) -> list[FDBEntry]:
        return [FDBEntry(dev=d.name, mac_address=m) for d in self.devs.values() for m in d.fdb]

    def add_fdb(self, entry: FDBEntry) -> None:
        dev = self._dev(entry.dev)
        if entry.mac_address in dev.fdb:
            raise PyloxiError(409, f"fdb {entry.mac_address} on {dev.name}: file exists")
        dev.fdb.append(entry.mac_address)

    def delete_fdb(self, mac: str, dev: str) -> None:
        d = self._dev(dev, "if_name")
        if mac not in d.fdb:
            raise NotFound(f"fdb entry {mac} not found on {dev}")
        d.fdb.remove(mac)

    # --- vlan
    def _bridge(self, vid: int) -> Dev:
        br = self.devs.get(f"vlan{vid}")
        if br is None or br.kind != "bridge":
            raise NotFound(f"vlan {vid} not found (no bridge vlan{vid})")
        return br

    def vlans(self) -> list[VlanGetEntry]:
        out = []
        for br in self.devs.values():
            if br.kind != "bridge":
                continue
            members = [VlanMemberEntry(dev=d.lower if d.kind == "vlan" else d.name,
                                       tagged=d.kind == "vlan")
                       for d in self.devs.values() if d.master == br.name]
            out.append(VlanGetEntry(vid=br.vid, dev=br.name, member=members))
        return out

    def add_vlan(self, vid: int) -> None:
        if f"vlan{vid}" in self.devs:
            raise Conflict(f"vlan {vid}: vlan{vid} already exists")
        self._new(f"vlan{vid}", kind="bridge", vid=vid)

    def delete_vlan(self, vid: int) -> None:
        br = self._bridge(vid)
        del self.devs[br.name]
        for d in list(self.devs.values()):
            if d.master == br.name:
                if d.kind == "vlan":
                    del self.devs[d.name]
                else:
                    d.master = ""

    def add_vlan_member(self, vid: int, dev: str, tagged: bool) -> None:
        br = self._bridge(vid)
        parent = self._dev(dev)
        if tagged:
            sub = f"{dev}.{vid}"
            if sub in self.devs:
                raise Conflict(f"vlan {vid} member {dev}: {sub} already exists")
            if not self.vlan_support:
                raise PyloxiError(500, f"vlan {vid} member {dev}: {sub}: operation not "
                                  "supported")
            self._new(sub, kind="vlan", lower=dev, vid=vid, master=br.name)
            return
        if parent.master:
            raise Conflict(f"vlan {vid} member {dev}: {dev} is already a member of "
                           f"{parent.master}")
        parent.master = br.name

    def delete_vlan_member(self, vid: int, dev: str, tagged: bool) -> None:
        br = self._bridge(vid)
        parent = self._dev(dev, "if_name")
        if tagged:
            sub = self.devs.get(f"{dev}.{vid}")
            if sub is None or sub.master != br.name:
                raise NotFound(f"vlan {vid} member {dev}: tagged member not found")
            del self.devs[sub.name]
        else:
            if parent.master != br.name:
                raise NotFound(f"vlan {vid} member {dev}: untagged member not found")
            parent.master = ""

    # --- vxlan
    def _vx(self, vni: int) -> Dev:
        vx = self.devs.get(f"vxlan{vni}")
        if vx is None or vx.kind != "vxlan":
            raise NotFound(f"vxlan {vni} not found (no device vxlan{vni})")
        return vx

    def vxlans(self) -> list[VxlanEntry]:
        return [VxlanEntry(vxlan_name=d.name, ep_intf=d.lower, vxlan_id=d.vni,
                           peer_ip=list(d.peers))
                for d in self.devs.values() if d.kind == "vxlan"]

    def add_vxlan(self, vni: int, ep_intf: str) -> None:
        if f"vxlan{vni}" in self.devs:
            raise Conflict(f"vxlan {vni}: vxlan{vni} already exists")
        ep = self._dev(ep_intf, "epIntf")
        if not any(ipaddress.ip_interface(a).version == 4 for a in ep.addrs):
            raise InvalidInput(f"invalid epIntf: {ep_intf} has no IPv4 address")
        self._new(f"vxlan{vni}", kind="vxlan", vni=vni, lower=ep_intf)

    def delete_vxlan(self, vni: int) -> None:
        del self.devs[self._vx(vni).name]

    def add_vxlan_peer(self, vni: int, peer_ip: str) -> None:
        vx = self._vx(vni)
        if peer_ip in vx.peers:
            raise PyloxiError(409, f"vxlan {vni} peer {peer_ip}: file exists")
        vx.peers.append(peer_ip)

    def delete_vxlan_peer(self, vni: int, peer_ip: str) -> None:
        vx = self._vx(vni)
        if peer_ip not in vx.peers:
            raise NotFound(f"vxlan {vni} peer {peer_ip} not found")
        vx.peers.remove(peer_ip)
