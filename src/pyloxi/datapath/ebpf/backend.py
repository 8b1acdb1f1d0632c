"""The eBPF datapath: writes engine decisions into the pinned maps of bpf/lb.bpf.c.

Service ids inside the maps ("dp ids") are the backend's own: on a restart the new daemon finds
each service's dp id again in the pinned `svc_map`, so established flows (whose conntrack
entries carry it) keep their counters and least-connection accounting.
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence

import numpy as np

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.conntrack import ConntrackTable
from pyloxi.datapath.ebpf.libbpf import (
    BpfError,
    BpfObject,
    Map,
    is_bpffs,
    mount_bpffs,
    prog_fd_by_id,
    prog_info,
    run_syscall_prog,
    tc_attach,
    tc_attached_prog_id,
    tc_detach,
)
from pyloxi.engine.program import (
    EndpointCounters,
    Flow,
    ServiceCounters,
    ServiceProgram,
)

log = logging.getLogger(__name__)

DEFAULT_OBJECT = os.environ.get(
    "PYLOXI_BPF_OBJECT",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "build", "lb.bpf.o"),
)
PROGRAM = "pyloxi_lb"
MAP_NAMES = ("svc_map", "cfg_map", "slot_map", "ep_map", "ep_stats", "conn_map", "svc_new",
             "rr_map", "ct_map", "aff_map", "allow_map", "stats_map", "close_map", "ct_half",
             "ep_addr_map", "frag_map")
#: the per-endpoint port count up to which a port range is protected against reply leaks
EP_ADDR_MAX_PORTS = 1024


def _ensure_bpffs(pin_dir: str) -> None:
    root = os.path.dirname(pin_dir.rstrip("/")) or "/"
    if not is_bpffs(root):
        log.info("mounting bpffs on %s", root)
        os.makedirs(root, exist_ok=True)
        mount_bpffs(root)


class DatapathInUse(RuntimeError):
    """A pyloxi datapath is attached and carries flows, but its maps can be neither found
    pinned nor adopted: starting would swap in empty tables and drop every flow."""


def _live_program(interfaces: Sequence[str]) -> tuple[str, int] | None:
    """(interface, program id) of the first pyloxi program attached where we will attach."""
    found: tuple[str, int] | None = None
    for name in interfaces:
        try:
            pid = tc_attached_prog_id(socket.if_nametoindex(name), ingress=True)
        except OSError:  # no such interface (yet): nothing attached there
            continue
        if pid is None:
            continue
        try:
            fd = prog_fd_by_id(pid)
        except BpfError as exc:
            raise DatapathInUse(f"a program (id {pid}) is attached to {name} but cannot be "
                                f"inspected ({exc})") from exc
        try:
            info = prog_info(fd)
        finally:
            os.close(fd)
        if info.name != PROGRAM[:15]:  # kernel names stop at 15 characters
            log.warning("%s carries a foreign tc program %r (id %d); it will be replaced",
                        name, info.name, pid)
            continue
        if found is None:
            found = (name, pid)
        elif found[1] != pid:
            log.warning("%s and %s carry different pyloxi programs (ids %d, %d); adopting "
                        "the maps of the first", found[0], name, found[1], pid)
    return found


class EbpfDatapath:
    """Datapath protocol on the TC program. Thread-safe (one lock around map writes)."""

    def __init__(self, pin_dir: str, *, obj_path: str = DEFAULT_OBJECT,
                 ct_entries: int | None = None, ct_half_entries: int | None = None,
                 interfaces: Sequence[str] = ()) -> None:
        """Open the object and load it against the maps pinned under *pin_dir*. Maps whose
        pin is missing are taken over from the pyloxi program attached to one of
        *interfaces*, if there is one: the pins of a daemon run under `ip netns exec` live in
        its private mount namespace and vanish with it, while the attached program keeps the
        maps (and the flows) alive."""
        _ensure_bpffs(pin_dir)
        self.pin_dir = pin_dir
        self.obj = BpfObject.open(os.path.abspath(obj_path), pin_root=pin_dir)
        if ct_entries is not None:  # a conntrack table of another size (bench); before load
            self.obj.set_max_entries("ct_map", ct_entries)
        if ct_half_entries is not None:  # the half-open table (tests: a small one to flood)
            self.obj.set_max_entries("ct_half", ct_half_entries)
        adopted = self._adopt_live_maps(interfaces)
        try:
            self.obj.load()  # creates the rest and pins every map, adopted ones included
        finally:
            for m in adopted:
                m.close()  # the object holds its own dups
        self.prog_fd = self.obj.program_fd(PROGRAM)
        self.maps: dict[str, Map] = {name: self.obj.map(name) for name in MAP_NAMES}
        self._closed_prog = self.obj.program_fd("pl_conn_closed")
        self._lock = threading.RLock()
        self._dp_of: dict[int, int] = {}  # engine svc_id -> dp id
        self._progs: dict[int, ServiceProgram] = {}  # dp id -> program
        self._orphans: set[int] = self._ids_in_maps()  # installed by an earlier daemon
        self._next_free = 1
        self.attached: list[int] = []
        self.ct = ConntrackTable(self.maps["ct_map"], self._count_closed, self.maps["ct_half"])
        self._ep_addr_refs: dict[bytes, int] = {}  # ep_addr_map key -> services using it
        self._ep_addrs: dict[int, set[bytes]] = {}  # dp id -> its ep_addr_map keys

    def _adopt_live_maps(self, interfaces: Sequence[str]) -> list[Map]:
        """Before load: point each map whose pin is missing at the live map of the same name
        used by the attached pyloxi program. Returns the adopted maps (the caller closes)."""
        missing = [n for n in self.obj.pinned_map_names()
                   if not os.path.exists(self.obj.pin_path(n) or "")]
        if not missing or not interfaces:
            return []
        live = _live_program(interfaces)
        if live is None:
            return []  # nothing attached: a fresh start
        ifname, pid = live
        how = (f"Start it with `pyloxi daemon --netns NS` rather than under `ip netns exec`, "
               f"so the pins under {self.pin_dir} outlive the daemon; or, to start with empty "
               f"tables and drop the flows, remove the old datapath first "
               f"(`tc filter del dev {ifname} ingress`).")
        adopted: list[Map] = []
        try:
            fd = prog_fd_by_id(pid)
            try:
                ids = prog_info(fd).map_ids
            finally:
                os.close(fd)
            live_maps = {}
            for map_id in ids:
                m = Map.from_id(map_id)
                live_maps[m.name] = m
            for name in missing:
                m = live_maps.pop(name[:15], None)
                if m is None:  # not used by the packet path: holds no flow state
                    log.info("map %s: not pinned, not used by the attached program; new", name)
                    continue
                self.obj.reuse_map(name, m)
                adopted.append(m)
            for m in live_maps.values():
                m.close()
        except BpfError as exc:
            for m in adopted:
                m.close()
            raise DatapathInUse(
                f"the pyloxi datapath attached to {ifname} (program id {pid}) carries live "
                f"flows, its maps are not pinned under {self.pin_dir} and cannot be adopted "
                f"({exc}). {how}") from exc
        log.warning("pins were missing under %s: adopted %d maps (%s) of the datapath attached "
                    "to %s (program id %d), flows kept; pinning them again", self.pin_dir,
                    len(adopted), ", ".join(m.name for m in adopted), ifname, pid)
        return adopted

    # --- attach ---

    def attach(self, ifnames: Iterable[str]) -> None:
        """TC ingress on each interface; replaces an earlier program atomically (restart)."""
        for name in ifnames:
            ifindex = socket.if_nametoindex(name)
            tc_attach(ifindex, self.prog_fd, ingress=True)
            self.attached.append(ifindex)
            log.info("datapath attached to %s (ifindex %d)", name, ifindex)

    def detach(self) -> None:
        for ifindex in self.attached:
            try:
                tc_detach(ifindex, ingress=True)
            except OSError as exc:  # interface gone already
                log.debug("detach ifindex %d: %s", ifindex, exc)
        self.attached.clear()

    # --- services ---

    def _ids_in_maps(self) -> set[int]:
        ids = set()
        for _k, v in self.maps["svc_map"].lookup_batch():
            ids.add(L.SvcVal.from_buffer_copy(v).svc_id)
        return ids

    def _dp_id(self, prog: ServiceProgram) -> tuple[int, bool]:
        """The dp id for a service, and whether it is new to the maps."""
        if prog.svc_id in self._dp_of:
            return self._dp_of[prog.svc_id], False
        key = self._svc_key(prog, prog.port_min)
        raw = self.maps["svc_map"].lookup(bytes(key))
        if raw is not None:
            dp = L.SvcVal.from_buffer_copy(raw).svc_id
            if dp in self._orphans:  # same service, installed before a restart: adopt it
                self._orphans.discard(dp)
                return dp, False
        while self._next_free < L.MAX_SERVICES:
            dp = self._next_free
            self._next_free += 1
            if dp not in self._progs and dp not in self._orphans:
                return dp, True
        for dp in range(1, L.MAX_SERVICES):  # wrapped: look for a freed id
            if dp not in self._progs and dp not in self._orphans:
                return dp, True
        raise RuntimeError("datapath service table full")

    @staticmethod
    def _svc_key(prog: ServiceProgram, port: int) -> L.SvcKey:
        return L.SvcKey(vip=L.ip_n(prog.vip), port=L.port_n(port), proto=prog.proto)

    def _ports(self, prog: ServiceProgram) -> range:
        return range(prog.port_min, max(prog.port_min, prog.port_max) + 1)

    def install_service(self, prog: ServiceProgram) -> None:
        with self._lock:
            dp, fresh = self._dp_id(prog)
            old = self._progs.get(dp)
            m = self.maps
            # Counters of a fresh id are zero: ids are zeroed when their service goes.
            # Endpoints first, then the inactive slot table, then flip the generation.
            eps = [self._ep_val(e) for e in prog.endpoints]
            if not fresh:  # clear what the previous version had beyond the new length
                known = len(old.endpoints) if old is not None else L.MAX_EPS  # after a restart
                eps += [L.EpVal()] * max(0, known - len(eps))
            gids = [dp * L.MAX_EPS + i for i in range(len(eps))]
            m["ep_map"].update_batch([_u32(g) for g in gids], [bytes(e) for e in eps])
            cfg_raw = m["cfg_map"].lookup(_u32(dp))
            gen = 0
            if cfg_raw is not None and not fresh:
                gen = 1 - L.SvcCfg.from_buffer_copy(cfg_raw).gen
            table = L.SlotTable()
            for i, idx in enumerate(prog.slots[: L.SLOTS]):
                table.ep[i] = idx
            m["slot_map"].update(_u32(dp * 2 + gen), bytes(table))
            cfg = L.SvcCfg(
                vip=L.ip_n(prog.vip), idle_timeout=prog.idle_timeout,
                persist_timeout=prog.persist_timeout, n_slots=min(len(prog.slots), L.SLOTS),
                mode=int(prog.mode), sel=int(prog.sel), gen=gen,
                flags=L.SVC_F_ALLOWLIST if prog.allowed_sources else 0,
            )
            self._sync_allow(dp, old, prog)
            self._sync_endpoint_addrs(dp, prog)
            m["cfg_map"].update(_u32(dp), bytes(cfg))
            # publish the service keys last: a packet never finds a half-written service
            val = bytes(L.SvcVal(svc_id=dp, port_base=prog.port_min))
            keys = [bytes(self._svc_key(prog, p)) for p in self._ports(prog)]
            if old is not None:
                stale = set(bytes(self._svc_key(old, p)) for p in self._ports(old)) - set(keys)
                m["svc_map"].delete_batch(list(stale))
            m["svc_map"].update_batch(keys, [val] * len(keys))
            self._dp_of[prog.svc_id] = dp
            self._progs[dp] = prog

    def _sync_allow(self, dp: int, old: ServiceProgram | None, new: ServiceProgram | None) -> None:
        before = set(old.allowed_sources) if old else set()
        after = set(new.allowed_sources) if new else set()
        m = self.maps["allow_map"]
        for cidr in after - before:
            m.update(bytes(L.allow_key(dp, cidr)), _u32(1))
        for cidr in before - after:
            m.delete(bytes(L.allow_key(dp, cidr)))

    @staticmethod
    def _endpoint_addrs(prog: ServiceProgram) -> set[bytes]:
        """ep_addr_map keys of a service: every endpoint ip:port/proto its flows are sent to
        (icmp: port 0). DSR replies come from the VIP, not the endpoint: none."""
        if int(prog.mode) == 3:  # NatMode.DSR
            return set()
        span = max(0, prog.port_max - prog.port_min)
        out = set()
        for e in prog.endpoints:
            if prog.proto == 1:
                ports: range = range(1)
            elif e.port:
                ports = range(e.port, min(e.port + span, 65535) + 1)
            else:
                ports = range(prog.port_min, max(prog.port_min, prog.port_max) + 1)
            if len(ports) > EP_ADDR_MAX_PORTS:  # a huge range: not protected (documented)
                continue
            for port in ports:
                out.add(bytes(L.EpAddrKey(ip=L.ip_n(e.ip), port=L.port_n(port),
                                          proto=prog.proto)))
        return out

    def _sync_endpoint_addrs(self, dp: int, prog: ServiceProgram | None) -> None:
        """Keep ep_addr_map equal to the endpoint addresses of the installed services
        (reference-counted: services may share an endpoint), so the datapath can drop a
        conntrack-less reply from an endpoint instead of letting the kernel forward it un-NATed.
        Written before the service keys are published: a new flow's replies are covered."""
        new = self._endpoint_addrs(prog) if prog is not None else set()
        old = self._ep_addrs.pop(dp, set())
        if new:
            self._ep_addrs[dp] = new
        m = self.maps["ep_addr_map"]
        added = [k for k in new - old if self._ep_addr_refs.get(k, 0) == 0]
        for k in new - old:
            self._ep_addr_refs[k] = self._ep_addr_refs.get(k, 0) + 1
        if added:
            m.update_batch(added, [_u32(1)] * len(added))
        gone = []
        for k in old - new:
            left = self._ep_addr_refs.get(k, 1) - 1
            if left <= 0:
                self._ep_addr_refs.pop(k, None)
                gone.append(k)
            else:
                self._ep_addr_refs[k] = left
        if gone:
            m.delete_batch(gone)

    def _prune_endpoint_addrs(self) -> None:
        """Drop endpoint addresses an earlier daemon wrote for services nobody re-installed."""
        m = self.maps["ep_addr_map"]
        stale = [k for k in m if k not in self._ep_addr_refs]
        if stale:
            m.delete_batch(stale)

    @staticmethod
    def _ep_val(e) -> L.EpVal:  # type: ignore[no-untyped-def]
        return L.EpVal(ip=L.ip_n(e.ip), snat_ip=L.ip_n(e.snat_ip), port=L.port_n(e.port),
                       flags=L.EP_F_ACTIVE if e.active else 0, weight=min(e.weight, 255))

    def _zero_counters(self, dp: int) -> None:
        """Zero an id's endpoints and counters when its service goes, so a later service that
        gets the id starts clean (install then writes only what it uses)."""
        m = self.maps
        gids = [_u32(dp * L.MAX_EPS + i) for i in range(L.MAX_EPS)]
        m["ep_map"].update_batch(gids, [bytes(L.EpVal())] * len(gids))
        m["ep_stats"].update_batch(gids, [bytes(m["ep_stats"].value_blob_size)] * len(gids))
        m["conn_map"].update_batch(gids, [bytes(16)] * len(gids))
        m["svc_new"].update(_u32(dp), bytes(m["svc_new"].value_blob_size))
        m["rr_map"].update(_u32(dp), bytes(8))

    def remove_service(self, prog: ServiceProgram) -> None:
        with self._lock:
            dp = self._dp_of.pop(prog.svc_id, None)
            if dp is None:
                return
            self._remove_dp(dp, self._progs.pop(dp))

    def _remove_dp(self, dp: int, prog: ServiceProgram | None) -> None:
        m = self.maps
        if prog is not None:
            m["svc_map"].delete_batch([bytes(self._svc_key(prog, p)) for p in self._ports(prog)])
            self._sync_allow(dp, prog, None)
        else:  # left by an earlier daemon: find its keys
            keys = [k for k, v in m["svc_map"].lookup_batch()
                    if L.SvcVal.from_buffer_copy(v).svc_id == dp]
            m["svc_map"].delete_batch(keys)
            stale = [k for k, _ in m["allow_map"].lookup_batch()
                     if L.AllowKey.from_buffer_copy(k).svc_id == dp]
            for k in stale:
                m["allow_map"].delete(k)
        m["cfg_map"].update(_u32(dp), bytes(L.SvcCfg()))
        self._sync_endpoint_addrs(dp, None)
        self.ct.flush_service(dp)
        self._zero_counters(dp)

    def prune_orphans(self) -> int:
        """Remove services an earlier daemon installed that nobody re-installed."""
        with self._lock:
            orphans, self._orphans = self._orphans, set()
            for dp in orphans:
                self._remove_dp(dp, None)
            self._prune_endpoint_addrs()
            if orphans:
                log.info("removed %d services left by an earlier daemon", len(orphans))
            return len(orphans)

    # --- counters ---

    def service_counters(self, prog: ServiceProgram) -> ServiceCounters:
        with self._lock:
            dp = self._dp_of.get(prog.svc_id)
        if dp is None:
            return ServiceCounters()
        stats, conns = self.maps["ep_stats"], self.maps["conn_map"]
        eps = []
        tp = tb = 0
        for i in range(len(prog.endpoints)):
            gid = _u32(dp * L.MAX_EPS + i)
            p = b = 0
            for raw in stats.lookup_percpu(gid) or []:
                c = L.Counters.from_buffer_copy(raw)
                p += c.packets
                b += c.bytes
            conn = L.EpConn.from_buffer_copy(conns.lookup(gid) or bytes(16))
            eps.append(EndpointCounters(packets=p, bytes=b,
                                        active_flows=max(0, conn.opened - conn.closed)))
            tp, tb = tp + p, tb + b
        new = sum(int.from_bytes(r[:8], "little")
                  for r in self.maps["svc_new"].lookup_percpu(_u32(dp)) or [])
        return ServiceCounters(packets=tp, bytes=tb, new_flows=new, endpoints=tuple(eps))

    def datapath_stats(self) -> dict[str, int]:
        """Event counters of the datapath (new flows, drops by reason, ...)."""
        out = {}
        for i, name in enumerate(L.STAT_NAMES):
            vals = self.maps["stats_map"].lookup_percpu(_u32(i)) or []
            out[name] = sum(int.from_bytes(v[:8], "little") for v in vals)
        return out

    # --- conntrack ---

    def flows(self) -> list[Flow]:
        with self._lock:
            engine_id = {dp: p.svc_id for dp, p in self._progs.items()}
        return self.ct.flows(engine_id)

    def age_flows(self, now_ns: int | None = None) -> int:
        """Age conntrack at CLOCK_MONOTONIC (the datapath's clock), or at *now_ns* (bench)."""
        with self._lock:
            idle = {dp: p.idle_timeout for dp, p in self._progs.items()}
        return self.ct.age(idle, time.monotonic_ns() if now_ns is None else now_ns)

    def reset_endpoint_flows(self, ip: str, port: int) -> int:
        """Cut the flows of an endpoint (liveness `reset` policy): their next packet finds no
        flow, is balanced to a live endpoint, which refuses the unknown TCP connection."""
        with self._lock:
            return self.ct.flush_endpoint(L.ip_n(ip), L.port_n(port))

    def _count_closed(self, gids: np.ndarray, counts: np.ndarray) -> None:
        """Add aged-out flows to conn_map.closed through the pl_conn_closed program."""
        for start in range(0, len(gids), L.CLOSE_BATCH):
            req = L.ConnCloseReq()
            chunk = gids[start:start + L.CLOSE_BATCH]
            req.n = len(chunk)
            ctypes.memmove(req.gid, np.ascontiguousarray(chunk, dtype=np.uint32).ctypes.data,
                           4 * len(chunk))
            ctypes.memmove(req.count, np.ascontiguousarray(
                counts[start:start + L.CLOSE_BATCH], dtype=np.uint32).ctypes.data, 4 * len(chunk))
            self.maps["close_map"].update(_u32(0), bytes(req))
            run_syscall_prog(self._closed_prog)

    def close(self) -> None:
        """Release handles. Pinned maps and the attached program stay: flows keep going."""
        self.obj.close()

    def destroy(self) -> None:
        """Detach and unpin everything (tests, `pyloxi daemon --cleanup`)."""
        self.detach()
        self.obj.close()
        for name in MAP_NAMES:
            path = os.path.join(self.pin_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        if os.path.isdir(self.pin_dir) and not os.listdir(self.pin_dir):
            os.rmdir(self.pin_dir)


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "little")
