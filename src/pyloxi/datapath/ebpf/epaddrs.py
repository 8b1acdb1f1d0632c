"""ep_addr_map: the endpoint addresses of the installed services, so the datapath can drop a
conntrack-less reply from an endpoint instead of letting the kernel forward it un-NATed."""

from __future__ import annotations

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.engine.program import ServiceProgram

#: the per-endpoint port count up to which a port range is protected against reply leaks
EP_ADDR_MAX_PORTS = 1024

_ONE = (1).to_bytes(4, "little")


def endpoint_addrs(prog: ServiceProgram) -> set[bytes]:
    """ep_addr_map keys of a service: every endpoint ip:port/proto its flows are sent to
    (icmp: port 0). DSR replies come from the VIP, not the endpoint: none."""
    if int(prog.mode) == 3:  # NatMode.DSR
        return set()
    span = max(0, prog.port_max - prog.port_min)
    out = set()
    for e in prog.endpoints:
        ip, fam = L.addr(e.ip)
        if prog.proto == 1:
            ports: range = range(1)
        elif e.port:
            ports = range(e.port, min(e.port + span, 65535) + 1)
        else:
            ports = range(prog.port_min, max(prog.port_min, prog.port_max) + 1)
        if len(ports) > EP_ADDR_MAX_PORTS:  # a huge range: not protected (documented)
            continue
        for port in ports:
            out.add(bytes(L.EpAddrKey(ip=L.Addr.from_buffer_copy(ip), port=L.port_n(port),
                                      proto=prog.proto, family=fam)))
    return out


class EndpointAddrs:
    """ep_addr_map kept equal to the endpoint addresses of the installed services,
    reference-counted: services may share an endpoint. Not thread-safe (the backend's lock)."""

    def __init__(self, m: Map) -> None:
        self.map = m
        self._refs: dict[bytes, int] = {}  # ep_addr_map key -> services using it
        self._of: dict[int, set[bytes]] = {}  # dp id -> its ep_addr_map keys

    def sync(self, dp: int, prog: ServiceProgram | None) -> None:
        """The addresses of service `dp` become `prog`'s (None: the service is gone)."""
        new = endpoint_addrs(prog) if prog is not None else set()
        old = self._of.pop(dp, set())
        if new:
            self._of[dp] = new
        added = [k for k in new - old if self._refs.get(k, 0) == 0]
        for k in new - old:
            self._refs[k] = self._refs.get(k, 0) + 1
        if added:
            self.map.update_batch(added, [_ONE] * len(added))
        gone = []
        for k in old - new:
            left = self._refs.get(k, 1) - 1
            if left <= 0:
                self._refs.pop(k, None)
                gone.append(k)
            else:
                self._refs[k] = left
        if gone:
            self.map.delete_batch(gone)

    def prune(self) -> None:
        """Drop endpoint addresses an earlier daemon wrote for services nobody re-installed."""
        stale = [k for k in self.map if k not in self._refs]
        if stale:
            self.map.delete_batch(stale)
