"""The eBPF datapath: writes engine decisions into the pinned maps of bpf/lb.bpf.c.

Service ids inside the maps ("dp ids") are the backend's own: on a restart the new daemon finds
each service's dp id again in the pinned `svc_map`, so established flows (whose conntrack
entries carry it) keep their counters and least-connection accounting.

Programming a service is a transaction, as the packet sees it and as the caller sees it:
- Versions. A service lives in two versions, `ver_map[dp * 2 + gen]` (config naming its
  endpoints and slot table, extents of `ep_pool` and `slot_pool` (pools.py), and, keyed by the
  same version id, its allowed sources); `gen_map[dp]` names the live one. An update writes
  the other version whole and then flips the generation word, so a packet reads one complete
  version, old or new. A version is rewritten only after an RCU grace period
  (membarrier(MEMBARRIER_CMD_GLOBAL) = synchronize_rcu) has passed since it was last live, so
  no packet still in the program reads it while it changes. Grace periods are counted in
  epochs: one is waited for only when the same service flipped since the last one.
- Keys. A live service key is never rewritten (a hash map update recycles the element, and a
  packet that looked it up could read another service's value): an update inserts only its new
  ports and deletes only the ports it lost.
- Rollback. Every write records what it replaced before it is made (an insert: that the key
  was absent); on any error the log is replayed backwards, so a failed install leaves the maps
  as they were, byte for byte. Writes that cannot fail for lack of room come after the one that
  can (inserting service keys into a full table), and the flip comes last. Pool extents and
  counter ids are allocated before anything is written (a full pool changes nothing) and
  written while nothing points at them; a version's old extents are freed once the new ones
  are in place (a grace period has passed since that version was live).
- Counters. Each endpoint index of a service has a counter id (ep_val.gid, carried by its
  flows' conntrack entries) for ep_stats, conn_map and pol_ep, kept while the service lives.
- Reuse. An endpoint index taken over by a different endpoint starts clean: that index's flows
  (of the endpoint the rule removed), affinities and counters are cleared before the version
  that makes it selectable goes live. A removed service leaves no keys, flows, affinities or
  allowed sources; its versions are cleared once a grace period has passed (its id is not
  handed out before that).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pyloxi.bpf import locate_object
from pyloxi.datapath.ebpf import counters
from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.adopt import adopt_live_maps, check_pins, keep_pinned_sizes
from pyloxi.datapath.ebpf.conntrack import ConntrackTable
from pyloxi.datapath.ebpf.ctsync import FlowSync, SyncMaps
from pyloxi.datapath.ebpf.epaddrs import EndpointAddrs
from pyloxi.datapath.ebpf.libbpf.bpffs import is_bpffs, mount_bpffs
from pyloxi.datapath.ebpf.libbpf.errors import BpfError
from pyloxi.datapath.ebpf.libbpf.maps import BPF_F_LOCK, Map
from pyloxi.datapath.ebpf.libbpf.objects import BpfObject
from pyloxi.datapath.ebpf.libbpf.tc import tc_attach, tc_detach
from pyloxi.datapath.ebpf.pools import Extents, Ids
from pyloxi.datapath.ebpf.txn import Undo, synchronize_rcu
from pyloxi.datapath.ebpf.versions import Version, build_version, reused_slots
from pyloxi.datapath.ebpf.xdpattach import PROGRAM as XDP_PROGRAM
from pyloxi.datapath.ebpf.xdpattach import XdpPorts
from pyloxi.engine.firewall import FwRuleProgram
from pyloxi.engine.mirror import MirrorProgram
from pyloxi.engine.policer import PolicerProgram
from pyloxi.engine.program import Flow, ServiceCounters, ServiceProgram
from pyloxi.model.lb import NatMode, Selection

log = logging.getLogger(__name__)

PROGRAM = "pyloxi_lb"
MAP_NAMES = ("svc_map", "gen_map", "ver_map", "ep_pool", "slot_pool", "ep_stats", "conn_map",
             "svc_new", "rr_map",
             "ct_map", "aff_map", "allow_map", "stats_map", "ct_half",
             "ep_addr_map", "frag_map", "mh_map", "assoc_map", "rassoc_map", "ct_events",
             "fw_map", "fw_gen", "fw_stats",
             "pol_map", "pol_port", "pol_svc", "pol_ep", "pol_client", "pol_cfg_map", "pol_stats",
             "mirr_map", "mirr_gate", "mirr_port", "mirr_svc", "mirr_stats", "xdp_ports")
_AFF_KEY = np.dtype([("svc_id", "<u4"), ("saddr", "V16")])
_AFF_VAL = np.dtype([("last_ns", "<u8"), ("ep_idx", "<u4"), ("pad", "<u4")])
_ONE = (1).to_bytes(4, "little")


def _pol_target(p: PolicerProgram) -> tuple[str, str, str, int, str]:
    return p.port, p.rule, p.ep_ip, p.ep_port, p.client


def _fill_ns(size: int, rate: int) -> int:
    """Nanoseconds a token bucket of `size` bytes takes to fill at `rate` bytes/s (rounded up):
    the datapath clamps the time since a bucket's last packet to it (policer.h)."""
    return -(-size * 10**9 // rate)
_SCTP = 132


@dataclass(slots=True)
class _Plan:
    """What one install allocated before writing anything: released if the install fails."""

    version: Version
    live_eps: list[L.EpVal]  # the endpoints of the version live now ([]: a fresh service)
    gids: list[int]  # counter id of each endpoint index of the version
    new_gids: list[int]  # of those, the ones allocated now
    ep_base: int = 0
    slot_base: int = 0
    ep_n: int = 0  # what is allocated from each pool (0: nothing yet)
    chunks: int = 0


def _ensure_bpffs(pin_dir: str) -> None:
    root = os.path.dirname(pin_dir.rstrip("/")) or "/"
    if not is_bpffs(root):
        log.info("mounting bpffs on %s", root)
        os.makedirs(root, exist_ok=True)
        mount_bpffs(root)


class EbpfDatapath:
    """Datapath protocol on the TC program. Thread-safe (one lock around map writes)."""

    # the NAT modes bpf/lb.bpf.c implements (dsr: bpf/include/pyloxi/dsr.h); the engine
    # refuses the others (400 "mode … not supported")
    SUPPORTED_MODES = frozenset({NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT, NatMode.DSR})

    @property
    def supported_modes(self) -> frozenset[NatMode]:
        return self.SUPPORTED_MODES

    def __init__(self, pin_dir: str, *, obj_path: str | None = None,
                 ct_entries: int | None = None, ct_half_entries: int | None = None,
                 map_sizes: dict[str, int] | None = None,
                 interfaces: Sequence[str] = (),
                 dsr_tunnel_source: Callable[[str], str | None] | None = None) -> None:
        """Open the object and load it against the maps pinned under *pin_dir*. Maps whose
        pin is missing are taken over from the pyloxi program attached to one of
        *interfaces*, if there is one: the pins of a daemon run under `ip netns exec` live in
        its private mount namespace and vanish with it, while the attached program keeps the
        maps (and the flows) alive.

        *dsr_tunnel_source*: for a dsr endpoint, the LB's own address toward it when it is not
        on-link (its route has a gateway, so rewriting MACs cannot reach it), else None; such an
        endpoint is sent IPIP from that address (L3 DSR). Without it every endpoint is L2."""
        self._dsr_tunnel_source = dsr_tunnel_source
        _ensure_bpffs(pin_dir)
        self.pin_dir = pin_dir
        self.obj = BpfObject.open(locate_object(obj_path), pin_root=pin_dir)
        sizes = dict(map_sizes or {})
        if ct_entries is not None:  # the established table (bench, daemon flag)
            sizes["ct_map"] = ct_entries
        if ct_half_entries is not None:  # the half-open table (tests: a small one to flood)
            sizes["ct_half"] = ct_half_entries
        for name, n in sizes.items():  # before load (tests: small tables that fill up)
            self.obj.set_max_entries(name, n)
        # the conntrack tables' sizes when none was asked for: what is pinned (an upgrade that
        # changed the compiled size keeps its flows)
        keep_pinned_sizes(self.obj, [n for n in ("ct_map", "ct_half") if n not in sizes])
        check_pins(self.obj, pin_dir)  # an earlier version's layout: a clear error, not EINVAL
        adopted = adopt_live_maps(self.obj, pin_dir, interfaces, PROGRAM)
        try:
            self.obj.load()  # creates the rest and pins every map, adopted ones included
        finally:
            for m in adopted:
                m.close()  # the object holds its own dups
        self.prog_fd = self.obj.program_fd(PROGRAM)
        self.xdp_prog_fd = self.obj.program_fd(XDP_PROGRAM)  # the fast path (xdpattach.py)
        self.maps: dict[str, Map] = {name: self.obj.map(name) for name in MAP_NAMES}
        self._lock = threading.RLock()
        self._dp_of: dict[int, int] = {}  # engine svc_id -> dp id
        self._progs: dict[int, ServiceProgram] = {}  # dp id -> program
        # services an earlier daemon installed: dp id -> its service keys
        self._orphans: dict[int, set[bytes]] = self._keys_in_maps()
        self._orphan_of = {k: dp for dp, keys in self._orphans.items() for k in keys}
        self._allow: dict[int, set[bytes]] = self._allow_in_maps()  # version id -> keys
        # Pools (pools.py): each version's extents (ver_id -> (ep_base, n_eps, slot_base,
        # chunks)) and each service's counter ids by endpoint index; an earlier daemon's
        # services keep theirs (read back from their versions).
        pools = self.maps
        self._ep_ext = Extents(pools["ep_pool"].max_entries, "endpoint")
        self._slot_ext = Extents(pools["slot_pool"].max_entries, "slot table")
        self._gid_ids = Ids(min(pools["ep_stats"].max_entries, pools["conn_map"].max_entries),
                            "endpoint counter ids")
        self._ext: dict[int, tuple[int, int, int, int]] = {}
        self._gids: dict[int, list[int]] = {}
        self._adopt_pools()
        self._next_free = 1
        # Grace periods: _epoch counts them; _flipped[dp] is the epoch of dp's last flip, and
        # _retired[dp] the epoch a removed dp went in (its id waits for the next grace period).
        # An earlier daemon may have flipped anything just now: its services count as flipped.
        self._epoch = 0
        self._flipped: dict[int, int] = {dp: 0 for dp in self._orphans}
        self._retired: dict[int, int] = {}
        # slots of the live mirrors (an earlier daemon's: their counters go on if restored)
        self._mirr_slots: set[int] = {
            int.from_bytes(k, "little") for k, v in self.maps["mirr_map"].items()
            if L.MirrCfg.from_buffer_copy(v).ifindex}
        self._mirr_rules: dict[str, int] = {}  # LB rule name -> slot of the mirror watching it
        self._mirr_svc: dict[bytes, bytes] = dict(self.maps["mirr_svc"].items())  # its copy
        self.attached: list[int] = []
        self.xdp = XdpPorts(self.xdp_prog_fd, self.maps["xdp_ports"])
        # ct_del_map is not pinned (it holds nothing between runs), so not in MAP_NAMES
        self.ct = ConntrackTable(self.maps["ct_map"], self.maps["ct_half"],
                                 self.obj.map("ct_del_map"), self.obj.program_fd("pl_ct_delete"))
        self._ep_addrs = EndpointAddrs(self.maps["ep_addr_map"])
        self._sync: FlowSync | None = None
        self._fw_ids: set[int] = set()  # rule ids (fw_stats slots) of the live rule set
        self._fw_flipped = 0  # epoch of the last fw_gen flip (see _quiesce)
        self._pols: dict[int, PolicerProgram] = {}  # policer id -> what it is (policer.h)
        self._pol_ports: dict[int, int] = {}  # ifindex -> policer id (pol_port's content)
        # dp -> {pol_ep key: policer id}: pol_ep's content, by service
        self._pol_eps: dict[int, dict[int, int]] = {}
        self._pol_clients: dict[bytes, int] = {}  # pol_client's content
        # interface, endpoint and client policers an earlier daemon left: gone until the saved
        # policers come back (rule policers are rewritten as each service is installed)
        for name in ("pol_port", "pol_ep", "pol_client"):
            self.maps[name].delete_batch(list(self.maps[name].keys()))
        self._pol_cfg()

    # --- attach ---

    def attach(self, ifnames: Iterable[str], datapath: str = "tc") -> None:
        """TC ingress on each interface; replaces an earlier program atomically (restart).
        *datapath* ("tc", "xdp", "auto"): the XDP fast path too (xdpattach.py), TC first so
        that XDP always has TC behind it."""
        for name in ifnames:
            ifindex = socket.if_nametoindex(name)
            tc_attach(ifindex, self.prog_fd, ingress=True)
            self.attached.append(ifindex)
            log.info("datapath attached to %s (ifindex %d)", name, ifindex)
            self.xdp.attach(name, datapath)

    def detach(self) -> None:
        self.xdp.detach()
        for ifindex in self.attached:
            try:
                tc_detach(ifindex, ingress=True)
            except OSError as exc:  # interface gone already
                log.debug("detach ifindex %d: %s", ifindex, exc)
        self.attached.clear()

    # --- services ---

    def _keys_in_maps(self) -> dict[int, set[bytes]]:
        keys: dict[int, set[bytes]] = {}
        for k, v in self.maps["svc_map"].lookup_batch():
            keys.setdefault(L.SvcVal.from_buffer_copy(v).svc_id, set()).add(k)
        return keys

    def _allow_in_maps(self) -> dict[int, set[bytes]]:
        out: dict[int, set[bytes]] = {}
        for k in self.maps["allow_map"]:
            out.setdefault(L.AllowKey.from_buffer_copy(k).ver_id, set()).add(k)
        return out

    def _grace(self) -> None:
        synchronize_rcu()
        self._epoch += 1

    def _quiesce(self, dp: int) -> None:
        """Make sure no packet still reads dp's inactive version (it was live before dp's last
        flip): wait for a grace period unless one has passed since that flip."""
        if self._flipped.get(dp, -1) >= self._epoch:
            self._grace()

    def _reap(self) -> None:
        """Clear the versions of removed services once a grace period has passed."""
        done = [dp for dp, ep in self._retired.items() if ep < self._epoch]
        if not done:
            return
        blank = bytes(ctypes.sizeof(L.SvcVer))
        ver, gen = self.maps["ver_map"], self.maps["gen_map"]
        ver.update_batch([_u32(dp * 2 + g) for dp in done for g in (0, 1)],
                         [blank] * (2 * len(done)))
        gen.update_batch([_u32(dp) for dp in done], [bytes(4)] * len(done))
        self._forget_affinity(set(done))
        for dp in done:
            # no packet reads its versions any more: their extents and counter ids go back
            # (counter ids are zeroed when handed out again)
            for ver_id in (dp * 2, dp * 2 + 1):
                self._free_ext(ver_id)
            self._gid_ids.release(self._gids.pop(dp, []))
            del self._retired[dp]
            self._flipped.pop(dp, None)

    def _dp_id(self, prog: ServiceProgram) -> tuple[int, bool, bool]:
        """(dp id, new to the maps, adopted from an earlier daemon). Changes no state."""
        if prog.svc_id in self._dp_of:
            return self._dp_of[prog.svc_id], False, False
        key = bytes(self._svc_key(prog, prog.port_min))
        dp = self._orphan_of.get(key)
        if dp is not None and dp in self._orphans:  # installed before a restart: adopt it
            return dp, False, True

        def busy(dp: int) -> bool:
            return dp in self._progs or dp in self._orphans or dp in self._retired

        while self._next_free < L.MAX_SERVICES:
            dp = self._next_free
            self._next_free += 1
            if not busy(dp):
                return dp, True, False
        for attempt in range(2):  # wrapped: look for a freed id
            for dp in range(1, L.MAX_SERVICES):
                if not busy(dp):
                    return dp, True, False
            if attempt == 0 and self._retired:  # ids free once a grace period has passed
                self._grace()
                self._reap()
        raise BpfError(errno.ENOSPC, "datapath service table full")

    @staticmethod
    def _svc_key(prog: ServiceProgram, port: int, vip_text: str | None = None) -> L.SvcKey:
        vip, fam = L.addr(vip_text or prog.vip)
        return L.SvcKey(vip=L.Addr.from_buffer_copy(vip), port=L.port_n(port), proto=prog.proto,
                        family=fam, mark=prog.block)

    def _ports(self, prog: ServiceProgram) -> range:
        return range(prog.port_min, max(prog.port_min, prog.port_max) + 1)

    def _keys(self, prog: ServiceProgram) -> list[bytes]:
        """Every svc_map key of the service: each port of its VIP and of its SCTP secondary
        VIPs (multihoming: the same service, so all paths of an association reach it). Keys
        are how install, remove and a restarted daemon's adoption find a service's entries,
        so the secondary VIPs are cleaned and restored with the primary."""
        return [bytes(self._svc_key(prog, p, vip))
                for vip in (prog.vip, *prog.secondary_vips) for p in self._ports(prog)]

    def _forget_assocs(self, dp: int) -> None:
        """Drop the SCTP associations of a removed service (assoc_map, sctp.h): its id may be
        reused by another service, whose packets must not follow them."""
        m = self.maps["assoc_map"]
        prefix = _u32(dp)
        gone = [k for k in m if k[:4] == prefix]
        if gone:
            m.delete_batch(gone)
        r = self.maps["rassoc_map"]
        gone = [k for k, v in r.lookup_batch() if L.RassocVal.from_buffer_copy(v).svc_id == dp]
        if gone:
            r.delete_batch(gone)

    def _write_mh(self, dp: int, prog: ServiceProgram | None, undo: Undo | None) -> None:
        """mh_map[dp]: the VIPs an endpoint's INIT-ACK addresses are rewritten to (sctp.h).
        Written for every SCTP service (a multihomed endpoint's own addresses must never
        reach the client); removed with the service."""
        m = self.maps["mh_map"]
        key = _u32(dp)
        if prog is None or prog.proto != _SCTP:
            if m.lookup(key) is not None:
                if undo is not None:
                    undo.delete(m, key, m.lookup(key) or b"")
                else:
                    m.delete(key)
            return
        val = bytes(L.mh_val([prog.vip, *prog.secondary_vips]))
        if m.lookup(key) != val:
            if undo is not None:
                undo.put(m, key, val)
            else:
                m.update(key, val)

    def install_service(self, prog: ServiceProgram) -> None:
        """Create or update a service: all of it, or (on any error) none of it."""
        with self._lock:
            self._reap()
            dp, fresh, adopted = self._dp_id(prog)
            old = self._progs.get(dp)
            if old == prog:
                return  # already live (e.g. the engine's undo after a clean rollback)
            undo = Undo()
            live = int.from_bytes(self.maps["gen_map"].lookup(_u32(dp)) or bytes(4),
                                  "little") & 1
            # every allocation before any write: a full pool is an error that changes nothing
            plan = self._plan(dp, fresh, live, prog)
            try:
                # the rule's policer before its packets can arrive, undone with the rest
                self._pol_svc(dp, prog.name, undo)
                pol_eps = self._pol_ep(dp, prog, undo, plan.gids)
                allow = self._install(dp, fresh, adopted, old, prog, undo, live, plan)
            except BaseException:
                undo.rollback()
                self._unplan(plan)
                raise
            self._gids[dp] = plan.gids
            if adopted:
                del self._orphans[dp]
            self._allow.update(allow)
            self._pol_eps[dp] = pol_eps
            try:
                self._ep_addrs.sync(dp, prog)
            except OSError as exc:  # the service works; only the reply-leak guard is partial
                log.warning("endpoint addresses of service %d not recorded: %s", dp, exc)
            self._dp_of[prog.svc_id] = dp
            self._progs[dp] = prog
            self._mirr_touch_logged(dp)

    def _live_eps(self, dp: int, live: int) -> list[L.EpVal]:
        """The endpoints of dp's live version, from ep_pool."""
        raw = self.maps["ver_map"].lookup(_u32(dp * 2 + live))
        if raw is None:  # only with a shrunken ver_map (tests)
            raise BpfError(errno.ENOSPC, f"no room for service versions of id {dp}")
        return self.version_eps(L.SvcVer.from_buffer_copy(raw).cfg)

    def version_eps(self, cfg: L.SvcCfg) -> list[L.EpVal]:
        """The endpoints (ep_pool) of the version whose config is `cfg`."""
        n = min(cfg.n_eps, L.MAX_EPS)
        if not n or cfg.ep_base + n > self.maps["ep_pool"].max_entries:
            return []
        raw = self.maps["ep_pool"].lookup_array_range(cfg.ep_base, n)
        size = ctypes.sizeof(L.EpVal)
        return [L.EpVal.from_buffer_copy(raw, i * size) for i in range(n)]

    def endpoint_gid(self, dp: int, idx: int) -> int:
        """The counter id (ep_stats, conn_map, pol_ep) of endpoint index idx of service dp."""
        with self._lock:
            return self._gids[dp][idx]

    def _plan(self, dp: int, fresh: bool, live: int, prog: ServiceProgram) -> _Plan:
        """Build dp's next version and allocate what it needs (counter ids for new endpoint
        indexes, its two extents); nothing is written. ENOSPC: nothing allocated."""
        live_eps = [] if fresh else self._live_eps(dp, live)
        version = build_version(prog, None if fresh else live_eps)
        try:
            plan = self._alloc_plan(dp, version, live_eps)
        except BpfError as exc:
            # removed services hold their extents until a grace period has passed
            if exc.errno != errno.ENOSPC or not self._retired:
                raise
            self._grace()
            self._reap()
            plan = self._alloc_plan(dp, version, live_eps)
        for i, e in enumerate(version.eps):
            e.gid = plan.gids[i]
        version.cfg.ep_base, version.cfg.slot_base = plan.ep_base, plan.slot_base
        return plan

    def _alloc_plan(self, dp: int, version: Version, live_eps: list[L.EpVal]) -> _Plan:
        gids = list(self._gids.get(dp, []))
        new = self._gid_ids.alloc(max(0, len(version.eps) - len(gids)))
        plan = _Plan(version=version, live_eps=live_eps, gids=gids + new, new_gids=new)
        try:
            if version.eps:
                plan.ep_base = self._ep_ext.alloc(len(version.eps))
                plan.ep_n = len(version.eps)
            if version.n_chunks:
                plan.slot_base = self._slot_ext.alloc(version.n_chunks)
                plan.chunks = version.n_chunks
        except BaseException:
            self._unplan(plan)
            raise
        return plan

    def _unplan(self, plan: _Plan) -> None:
        self._ep_ext.release(plan.ep_base, plan.ep_n)
        self._slot_ext.release(plan.slot_base, plan.chunks)
        self._gid_ids.release(plan.new_gids)
        plan.ep_n = plan.chunks = 0
        plan.new_gids = []

    def _free_ext(self, ver_id: int) -> None:
        ext = self._ext.pop(ver_id, None)
        if ext is not None:
            self._ep_ext.release(ext[0], ext[1])
            self._slot_ext.release(ext[2], ext[3])

    def _adopt_pools(self) -> None:
        """An earlier daemon's services keep their versions' extents and counter ids."""
        ver = self.maps["ver_map"]
        for dp in sorted(self._orphans):
            gids: list[int] = []
            for ver_id in (dp * 2, dp * 2 + 1):
                raw = ver.lookup(_u32(ver_id))
                if raw is None:
                    continue
                cfg = L.SvcCfg.from_buffer_copy(raw)
                chunks = -(-cfg.n_slots // L.SLOT_CHUNK)
                n_eps = cfg.n_eps if cfg.n_eps else 0
                if not (self._ep_ext.take(cfg.ep_base, n_eps) and
                        self._slot_ext.take(cfg.slot_base, chunks)):
                    log.warning("service id %d: version %d overlaps another's pool extents",
                                dp, ver_id)
                    continue
                self._ext[ver_id] = (cfg.ep_base, n_eps, cfg.slot_base, chunks)
                eps = self.version_eps(cfg)
                if len(eps) > len(gids):
                    gids += [e.gid for e in eps[len(gids):]]
            self._gid_ids.take(gids)
            self._gids[dp] = gids

    def _install(self, dp: int, fresh: bool, adopted: bool, old: ServiceProgram | None,
                 prog: ServiceProgram, undo: Undo, live: int,
                 plan: _Plan) -> dict[int, set[bytes]]:
        m = self.maps
        # A fresh id has no key pointing at it: its current version is not live, write that.
        nxt = live if fresh else 1 - live
        if not fresh:
            self._quiesce(dp)
        ver_id = dp * 2 + nxt
        version, live_eps = plan.version, plan.live_eps
        if prog.mode == NatMode.DSR:
            self._dsr_tunnels(version, prog)
        # the new extents: free until now, nothing reads them before the config names them
        if version.eps:
            m["ep_pool"].update_batch([_u32(plan.ep_base + i) for i in range(len(version.eps))],
                                      [bytes(e) for e in version.eps])
        if version.n_chunks:
            m["slot_pool"].update_batch(
                [_u32(plan.slot_base + i) for i in range(version.n_chunks)], version.chunks())
        if plan.new_gids:  # counter ids start at zero
            counters.zero_gids(m, plan.new_gids)
        undo.put(m["ver_map"], _u32(ver_id), bytes(L.SvcVer(cfg=version.cfg)))
        allow = {ver_id: self._write_allow(ver_id, prog, undo)}
        self._write_mh(dp, prog, undo)
        # New service keys (the only writes that can fail for want of room) before the flip;
        # they point at this service, whose live version stays the old one until the flip.
        val = bytes(L.SvcVal(svc_id=dp))
        had = set(self._keys(old)) if old is not None else self._orphans.get(dp, set())
        keys = self._keys(prog)
        for key in keys:
            if key not in had:
                self._insert_key(key, val, undo)
        for key in had - set(keys):  # ports the rule no longer has
            prev = m["svc_map"].lookup(key)
            if prev is not None:
                undo.delete(m["svc_map"], key, prev)
        if not fresh:
            reused = reused_slots(live_eps, prog)
            if reused:
                self._reset_slots(dp, reused, plan.gids)
            # The flip, last: until here the new version was never live, so a rollback may
            # rewrite it at once; after it, nothing is left to fail.
            undo.put(m["gen_map"], _u32(dp), _u32(nxt))
            self._flipped[dp] = self._epoch
        # nothing left to fail: the version's previous extents (not live since a grace period)
        # go back, the new ones are its own
        self._free_ext(ver_id)
        self._ext[ver_id] = (plan.ep_base, len(version.eps), plan.slot_base, version.n_chunks)
        return allow

    def _dsr_tunnels(self, version: Version, prog: ServiceProgram) -> None:
        """Flag the dsr endpoints that are not on-link IPIP, their outer source the LB's own
        address toward them (looked up when the rule is programmed: a route change applies at
        the rule's next update)."""
        if self._dsr_tunnel_source is None:
            return
        for i, e in enumerate(prog.endpoints[: L.MAX_EPS]):
            if ":" in e.ip:  # IPv6 endpoints: L2 DSR only (the datapath encapsulates IPIP)
                continue
            src = self._dsr_tunnel_source(e.ip)
            if src is not None:
                version.eps[i].flags |= L.EP_F_IPIP
                version.eps[i].snat_ip = L.pl_addr(src)

    def _insert_key(self, key: bytes, val: bytes, undo: Undo) -> None:
        m = self.maps["svc_map"]
        try:
            undo.insert(m, key, val)
        except OSError as exc:
            if exc.errno != errno.EEXIST or m.lookup(key) != val:
                raise
            # already ours (adopted from an earlier daemon): not written, nothing to undo

    def _write_allow(self, ver_id: int, prog: ServiceProgram, undo: Undo) -> set[bytes]:
        """The allowed sources of version `ver_id` become `prog`'s; returns its new key set."""
        m = self.maps["allow_map"]
        have = self._allow.get(ver_id, set())
        want = {bytes(L.allow_key(ver_id, cidr)) for cidr in prog.allowed_sources}
        for key in have - want:
            undo.delete(m, key, _ONE)
        for key in want - have:
            undo.insert(m, key, _ONE)
        return want

    def _reset_slots(self, dp: int, idxs: set[int], gids: list[int]) -> None:
        """Clear what endpoint indexes of dp carry from their previous endpoint. The live version
        does not select them (a reused index is a hole there, and a grace period has passed
        since an older version was live), so nothing new lands on them meanwhile."""
        self.ct.flush_slots(dp, idxs)
        self._forget_affinity({dp}, idxs)
        self._grace()  # packets of the flushed flows still in flight finish their accounting
        counters.zero_gids(self.maps, [gids[i] for i in sorted(idxs)])

    def _forget_affinity(self, dps: set[int], idxs: set[int] | None = None) -> int:
        """Delete persist affinities of services `dps` (of the given endpoint indexes, or all)."""
        m = self.maps["aff_map"]
        gone: list[bytes] = []
        for kraw, vraw, _n in m.lookup_batch_raw(batch=65536):
            k = np.frombuffer(kraw, dtype=_AFF_KEY)
            sel = np.isin(k["svc_id"], np.fromiter(dps, dtype=np.uint32))
            if idxs is not None:
                v = np.frombuffer(vraw, dtype=_AFF_VAL)
                sel &= np.isin(v["ep_idx"], np.fromiter(idxs, dtype=np.uint32))
            raw = np.frombuffer(kraw, dtype=np.dtype(f"V{_AFF_KEY.itemsize}"))
            gone += [bytes(b) for b in raw[np.nonzero(sel)[0]]]
        return m.delete_batch(gone)

    def _zero_counters(self, dp: int) -> None:
        """Zero an id's counters when its service goes (and again when its versions are
        cleared), so a later service that gets the id starts clean."""
        m = self.maps
        counters.zero_gids(m, self._gids.get(dp, []))
        m["svc_new"].update(_u32(dp), bytes(m["svc_new"].value_blob_size))
        m["rr_map"].update(_u32(dp), bytes(8))

    def remove_service(self, prog: ServiceProgram) -> None:
        with self._lock:
            self._reap()
            dp = self._dp_of.pop(prog.svc_id, None)
            if dp is None:
                return
            self._remove_dps([(dp, self._progs.pop(dp))])
            self._mirr_touch_logged(dp)

    def _remove_dps(self, gone: list[tuple[int, ServiceProgram | None]]) -> None:
        """Remove services (None: left by an earlier daemon, keys known from the maps)."""
        m = self.maps
        for dp, prog in gone:  # keys first: from here on no new packet finds the service
            keys = self._keys(prog) if prog is not None else self._orphans.pop(dp, set())
            m["svc_map"].delete_batch(list(keys))
            self._write_mh(dp, None, None)
            if prog is None or prog.proto == _SCTP:
                self._forget_assocs(dp)
            for ver_id in (dp * 2, dp * 2 + 1):
                m["allow_map"].delete_batch(sorted(self._allow.pop(ver_id, set())))
            self.ct.flush_service(dp)
            self._ep_addrs.sync(dp, None)
        persist = {dp for dp, prog in gone if prog is None or prog.sel == Selection.PERSIST}
        if persist:
            self._forget_affinity(persist)
        for dp, _prog in gone:
            self._pol_svc(dp, None)
            self._pol_ep(dp, None)
            self._pol_eps.pop(dp, None)
            self._zero_counters(dp)
            self._flipped.pop(dp, None)
            # Versions are cleared after the next grace period (with any affinity a packet
            # that found the service just before its keys went may still have added).
            self._retired[dp] = self._epoch

    def prune_orphans(self) -> int:
        """Remove services an earlier daemon installed that nobody re-installed."""
        with self._lock:
            orphans = list(self._orphans)
            self._remove_dps([(dp, None) for dp in orphans])
            self._ep_addrs.prune()
            if orphans:
                log.info("removed %d services left by an earlier daemon", len(orphans))
            return len(orphans)

    # --- firewall (bpf/include/pyloxi/firewall.h) ---

    def set_firewall(self, rules: Sequence[FwRuleProgram]) -> None:
        """Make `rules` (in judging order) the live rule set: written whole into the table
        that is not live, then fw_gen flipped. An unknown interface name (portName or a
        redirect's): ValueError."""
        if len(rules) > L.FW_MAX:
            raise ValueError(f"more than {L.FW_MAX} firewall rules")
        table = L.FwTable(n=len(rules))
        for i, r in enumerate(rules):
            try:
                ifindex = socket.if_nametoindex(r.ifname) if r.ifname else 0
            except OSError:
                raise ValueError(f"no interface named {r.ifname!r}") from None
            saddr, smask = L.fw_prefix(r.src)
            daddr, dmask = L.fw_prefix(r.dst)
            try:
                out_ifindex = socket.if_nametoindex(r.redirect) if r.redirect else 0
            except OSError:
                raise ValueError(f"no interface named {r.redirect!r}") from None
            action = (L.FW_SNAT if r.snat_ip else L.FW_REDIRECT if r.redirect
                      else L.FW_TRAP if r.trap else L.FW_ALLOW if r.allow else L.FW_DROP)
            snat_ip, snat_family = L.addr(r.snat_ip) if r.snat_ip else (bytes(16), 0)
            table.rule[i] = L.FwRule(
                saddr=saddr, smask=smask, daddr=daddr, dmask=dmask,
                sport_lo=r.sport[0], sport_hi=r.sport[1], dport_lo=r.dport[0],
                dport_hi=r.dport[1], ifindex=ifindex, mark=r.mark, id=r.id, proto=r.proto,
                action=action, snat_ip=L.Addr.from_buffer_copy(snat_ip),
                snat_port=L.port_n(r.snat_port), snat_family=snat_family,
                out_ifindex=out_ifindex)
        with self._lock:
            m = self.maps
            for rid in {r.id for r in rules} - self._fw_ids:  # a reused id starts at zero
                m["fw_stats"].update(_u32(rid), bytes(m["fw_stats"].value_blob_size))
            live = int.from_bytes(m["fw_gen"].lookup(_u32(0)) or bytes(4), "little") & 1
            # the table about to be rewritten was live before the last flip: no packet may
            # still be reading it
            if self._fw_flipped >= self._epoch:
                self._grace()
            m["fw_map"].update(_u32(live ^ 1), bytes(table))
            m["fw_gen"].update(_u32(0), _u32(live ^ 1))
            self._fw_flipped = self._epoch
            self._fw_ids = {r.id for r in rules}

    def firewall_counters(self) -> dict[int, tuple[int, int]]:
        """(packets, bytes) matched by each rule id of the live set, summed over CPUs."""
        with self._lock:
            ids = sorted(self._fw_ids)
        out = {}
        for rid in ids:
            p = b = 0
            for raw in self.maps["fw_stats"].lookup_percpu(_u32(rid)) or []:
                c = L.Counters.from_buffer_copy(raw)
                p, b = p + c.packets, b + c.bytes
            out[rid] = (p, b)
        return out

    # --- QoS policers (bpf/include/pyloxi/policer.h) ---

    def _pol_svc(self, dp: int, name: str | None, undo: Undo | None = None) -> None:
        """pol_svc[dp]: the policer of the rule named `name` (None: a removed service), or 0.
        Written only if it changes; through `undo` when part of an install."""
        pid = next((p.id for p in self._pols.values() if name and p.rule == name), 0)
        m, key, want = self.maps["pol_svc"], _u32(dp), _u32(pid)
        if m.lookup(key) == want:
            return
        if undo is not None:
            undo.put(m, key, want)
        else:
            m.update(key, want)

    def _pol_ep(self, dp: int, prog: ServiceProgram | None, undo: Undo | None = None,
                gids: list[int] | None = None) -> dict[int, int]:
        """pol_ep entries of service dp: each endpoint of `prog` (None: a removed service) an
        endpoint policer covers (its IP:PORT before its IP alone). Only changes are written;
        through `undo` when part of an install. Returns what pol_ep now holds for dp (the
        caller records it once the install is done). pol_ep is keyed by the endpoints' counter
        ids (`gids`, by endpoint index; default: the service's current ones)."""
        want: dict[int, int] = {}
        gids = self._gids.get(dp, []) if gids is None else gids
        eps = sorted((p for p in self._pols.values() if p.ep_ip), key=lambda p: p.ep_port != 0)
        if prog is not None and eps:
            for i, e in enumerate(prog.endpoints[: len(gids)]):
                for p in eps:  # any-port ones first: a policer of the exact port overrides
                    if p.ep_ip == e.ip and p.ep_port in (0, e.port):
                        want[gids[i]] = p.id
        m, have = self.maps["pol_ep"], self._pol_eps.get(dp, {})
        for slot, pid in have.items():
            if slot not in want:
                if undo is not None:
                    undo.delete(m, _u32(slot), _u32(pid))
                else:
                    m.delete(_u32(slot))
        for slot, pid in want.items():
            if have.get(slot) != pid:
                if undo is not None:
                    undo.put(m, _u32(slot), _u32(pid))
                else:
                    m.update(_u32(slot), _u32(pid))
        return want

    def _pol_eps_all(self) -> None:
        """pol_ep of every service, after the endpoint policers changed."""
        for dp, prog in self._progs.items():
            self._pol_eps[dp] = self._pol_ep(dp, prog)

    @staticmethod
    def _pol_client_key(ip: str) -> bytes:
        a, fam = L.addr(ip)
        return bytes(L.PolClientKey(ip=L.Addr.from_buffer_copy(a), family=fam))

    def set_policer(self, pol: PolicerProgram) -> None:
        """Create or replace policer `pol.id` (buckets full) and attach it to its target: an
        interface this datapath is attached to (else ValueError, nothing changed), every
        service, now and later, of the rule named `pol.rule`, every endpoint `pol.ep_ip`
        (`pol.ep_port`; 0: any) of any service, or the flows of client `pol.client`."""
        ifindex = 0
        if pol.client and len(self._pol_clients) >= L.POL_CLIENTS and \
                self._pol_client_key(pol.client) not in self._pol_clients:
            raise ValueError(f"client policers full: {L.POL_CLIENTS}")
        if pol.port:
            try:
                ifindex = socket.if_nametoindex(pol.port)
            except OSError:
                raise ValueError(f"no interface named {pol.port!r}") from None
            if ifindex not in self.attached:
                raise ValueError(f"interface {pol.port!r} is not one the datapath is attached "
                                 "to (--interfaces)")
        val = L.PolVal(type=L.POL_SRTCM if pol.srtcm else L.POL_TRTCM, rate_c=pol.cir,
                       rate_e=pol.pir, size_c=pol.cbs, size_e=pol.ebs,
                       fill_c_ns=_fill_ns(pol.cbs + (pol.ebs if pol.srtcm else 0), pol.cir),
                       fill_e_ns=_fill_ns(pol.ebs, pol.pir), tok_c=pol.cbs, tok_e=pol.ebs,
                       last_ns=0)
        with self._lock:
            m = self.maps
            old = self._pols.get(pol.id)
            if old is None:  # a reused id starts at zero
                m["pol_stats"].update(_u32(pol.id), bytes(m["pol_stats"].value_blob_size))
            m["pol_map"].update(_u32(pol.id), bytes(val), BPF_F_LOCK)
            self._pols[pol.id] = pol
            if old is not None and _pol_target(old) != _pol_target(pol):
                self._pol_detach(old)
            if ifindex:
                m["pol_port"].update(_u32(ifindex), _u32(pol.id))
                self._pol_ports[ifindex] = pol.id
            if pol.client:
                key = self._pol_client_key(pol.client)
                m["pol_client"].update(key, _u32(pol.id))
                self._pol_clients[key] = pol.id
            if pol.ep_ip:
                self._pol_eps_all()
            self._pol_cfg()
            for dp, prog in self._progs.items():
                if pol.rule and prog.name == pol.rule:
                    self._pol_svc(dp, prog.name)

    def _pol_detach(self, pol: PolicerProgram) -> None:
        for ifindex, pid in list(self._pol_ports.items()):
            if pid == pol.id:
                self.maps["pol_port"].delete(_u32(ifindex))
                del self._pol_ports[ifindex]
        for key, pid in list(self._pol_clients.items()):
            if pid == pol.id:
                self.maps["pol_client"].delete(key)
                del self._pol_clients[key]
        if pol.ep_ip:
            self._pol_eps_all()
        self._pol_cfg()
        for dp, prog in self._progs.items():
            if pol.rule and prog.name == pol.rule:
                self._pol_svc(dp, prog.name)

    def _pol_cfg(self) -> None:
        """pol_cfg_map: what kinds of per-packet lookups are worth doing (policer.h)."""
        neps = sum(1 for p in self._pols.values() if p.ep_ip)
        self.maps["pol_cfg_map"].update(_u32(0), bytes(L.PolCfg(
            nports=len(self._pol_ports), nclients=len(self._pol_clients), neps=neps)))

    def remove_policer(self, pol_id: int) -> None:
        with self._lock:
            pol = self._pols.pop(pol_id, None)
            if pol is not None:
                self._pol_detach(pol)

    def policer_counters(self) -> dict[int, tuple[int, int, int, int]]:
        """(packets ok, bytes ok, packets dropped, bytes dropped) of each policer, summed over
        CPUs."""
        with self._lock:
            ids = sorted(self._pols)
        out = {}
        for pid in ids:
            c = [0, 0, 0, 0]
            for raw in self.maps["pol_stats"].lookup_percpu(_u32(pid)) or []:
                v = L.PolCounters.from_buffer_copy(raw)
                c = [c[0] + v.ok_packets, c[1] + v.ok_bytes, c[2] + v.drop_packets,
                     c[3] + v.drop_bytes]
            out[pid] = (c[0], c[1], c[2], c[3])
        return out

    # --- mirror (bpf/include/pyloxi/mirror.h) ---

    def set_mirrors(self, mirrors: Sequence[MirrorProgram]) -> None:
        """Make `mirrors` the live set (what an earlier daemon left is replaced). An unknown
        mirror port or target interface: ValueError, nothing changed."""
        if len(mirrors) > L.MIRR_MAX:
            raise ValueError(f"more than {L.MIRR_MAX} mirrors")
        cfgs: dict[int, L.MirrCfg] = {}
        ports: dict[bytes, bytes] = {}
        for m in mirrors:
            cfgs[m.slot] = L.MirrCfg(ifindex=_ifindex(m.port, "mirror port"), vlan=m.vlan,
                                     type=L.MIRR_RSPAN if m.vlan else L.MIRR_SPAN)
            if not m.on_rule:
                ports[_u32(_ifindex(m.target, "mirrored interface"))] = _u32(m.slot)
        with self._lock:
            mp = self.maps
            for slot in set(cfgs) - self._mirr_slots:  # a reused slot starts at zero
                mp["mirr_stats"].update(_u32(slot), bytes(mp["mirr_stats"].value_blob_size))
            for slot, cfg in cfgs.items():  # the mirror before anything points at it
                mp["mirr_map"].update(_u32(slot), bytes(cfg))
            mp["mirr_port"].delete_batch([k for k in mp["mirr_port"] if k not in ports])
            for k, v in ports.items():
                mp["mirr_port"].update(k, v)
            self._mirr_rules = {m.target: m.slot for m in mirrors if m.on_rule}
            self._mirr_sync_rules(ports=len(ports))
            for slot in range(L.MIRR_MAX):  # unused slots: a packet finding one sends nothing
                if slot not in cfgs:
                    mp["mirr_map"].update(_u32(slot), bytes(L.MirrCfg()))
            self._mirr_slots = set(cfgs)

    def _mirr_sync_rules(self, ports: int) -> None:
        """mirr_svc: every service of a mirrored rule name -> its mirror's slot; mirr_gate
        written with `ports` port mirrors. Lock held."""
        m = self.maps
        want = {_u32(dp): _u32(self._mirr_rules[p.name]) for dp, p in self._progs.items()
                if p.name in self._mirr_rules}
        for k, v in want.items():
            if self._mirr_svc.get(k) != v:
                m["mirr_svc"].update(k, v)
        m["mirr_svc"].delete_batch([k for k in self._mirr_svc if k not in want])
        self._mirr_svc = want
        m["mirr_gate"].update(_u32(0), bytes(L.MirrGate(ports=ports, rules=len(want))))

    def _mirr_touch_logged(self, dp: int) -> None:
        """_mirr_touch after a service change that is done: a failure here must not report
        the change as failed (the rule serves); the mirror of that one rule is what suffers."""
        try:
            self._mirr_touch(dp)
        except OSError as exc:
            log.warning("mirror entry of service %d not updated: %s", dp, exc)

    def _mirr_touch(self, dp: int) -> None:
        """mirr_svc for service dp, just installed (its name may be mirrored, or no longer) or
        removed. Lock held; O(1), nothing written unless its entry changes."""
        prog = self._progs.get(dp)
        slot = self._mirr_rules.get(prog.name) if prog is not None else None
        key, want = _u32(dp), None if slot is None else _u32(slot)
        if self._mirr_svc.get(key) == want:
            return
        m = self.maps
        if want is None:
            m["mirr_svc"].delete(key)
            del self._mirr_svc[key]
        else:
            m["mirr_svc"].update(key, want)
            self._mirr_svc[key] = want
        gate = L.MirrGate.from_buffer_copy(
            m["mirr_gate"].lookup(_u32(0)) or bytes(ctypes.sizeof(L.MirrGate)))
        gate.rules = len(self._mirr_svc)
        m["mirr_gate"].update(_u32(0), bytes(gate))

    def mirror_counters(self) -> dict[int, tuple[int, int]]:
        """(packets, bytes) sent to the mirror port by each live slot, summed over CPUs."""
        with self._lock:
            slots = sorted(self._mirr_slots)
        out = {}
        for slot in slots:
            p = b = 0
            for raw in self.maps["mirr_stats"].lookup_percpu(_u32(slot)) or []:
                c = L.Counters.from_buffer_copy(raw)
                p, b = p + c.packets, b + c.bytes
            out[slot] = (p, b)
        return out

    # --- counters ---

    def service_counters(self, prog: ServiceProgram) -> ServiceCounters:
        with self._lock:
            dp = self._dp_of.get(prog.svc_id)
            if dp is None:
                return ServiceCounters()
            gids = self._gids.get(dp, [])[: len(prog.endpoints)]
        return counters.service_counters(self.maps, dp, gids)

    def services_counters(self, progs: Iterable[ServiceProgram]) -> dict[int, ServiceCounters]:
        """service_counters of many services (engine svc_id -> counters), read in batch: one
        syscall per service and map (metrics scrapes) instead of one per endpoint."""
        with self._lock:
            dps = {self._dp_of[p.svc_id]: p for p in progs if p.svc_id in self._dp_of}
            gids = {dp: self._gids.get(dp, [])[: len(p.endpoints)] for dp, p in dps.items()}
        read = counters.services_counters(self.maps, gids)
        return {dps[dp].svc_id: c for dp, c in read.items()}

    def datapath_stats(self) -> dict[str, int]:
        """Event counters of the datapath (new flows, drops by reason, ...)."""
        return counters.datapath_stats(self.maps["stats_map"])

    def conntrack_summary(self) -> dict[tuple[int, str], int]:
        """Flows by (IP protocol, state), as the last aging sweep left them (that sweep reads
        the whole table anyway); read now if no sweep ran yet."""
        return self.ct.summary()

    @property
    def conntrack_capacity(self) -> int:
        """Entries the established table holds (two per flow)."""
        return self.maps["ct_map"].max_entries

    # --- conntrack ---

    def flows(self) -> list[Flow]:
        with self._lock:
            engine_id = {dp: p.svc_id for dp, p in self._progs.items()}
        return self.ct.flows(engine_id)

    def prepare_aging(self) -> None:
        """Allocate the aging sweep's read buffers now (the daemon, at start), faulted in for
        the flows the table holds (a restart keeps them): two entries per established flow,
        as conn_map counts them, and a batch more."""
        oc = np.frombuffer(self.maps["conn_map"].lookup_array_range(
            0, self.maps["conn_map"].max_entries), dtype="<u8").reshape(-1, 2)
        established = int(np.clip(oc[:, 0].astype(np.int64) - oc[:, 1].astype(np.int64),
                                  0, None).sum())
        self.ct.prepare_sweep(2 * established + 65536)

    def age_flows(self, now_ns: int | None = None) -> int:
        """Age conntrack at CLOCK_MONOTONIC (the datapath's clock), or at *now_ns* (bench)."""
        with self._lock:
            idle = {dp: p.idle_timeout for dp, p in self._progs.items()}
        return self.ct.age(idle, time.monotonic_ns() if now_ns is None else now_ns)

    def reset_endpoint_flows(self, ip: str, port: int) -> int:
        """Cut the flows of an endpoint (liveness `reset` policy): their next packet finds no
        flow, is balanced to a live endpoint, which refuses the unknown TCP connection."""
        with self._lock:
            return self.ct.flush_endpoint(L.addr(ip)[0], L.port_n(port))

    def set_nat_share(self, index: int, count: int) -> None:
        """Active-active: allocate NAT source ports from share *index* of *count* equal parts
        of the range (a node's position in --cluster), so nodes that sync their flows never
        pick the same reply tuple. count 1: the whole range."""
        if count < 1 or not 0 <= index < count or count > 0xFFFF:
            raise ValueError(f"NAT port share {index} of {count}")
        self.obj.map("nat_share_map").update(_u32(0), bytes(L.NatShare(index=index, count=count)))

    def flow_sync(self) -> FlowSync:
        """Conntrack sync's access to this datapath (ring buffer, dump, insert by identity)."""
        if self._sync is None:
            m = self.maps
            self._sync = FlowSync(SyncMaps(
                ct_map=m["ct_map"], svc_map=m["svc_map"], gen_map=m["gen_map"],
                ver_map=m["ver_map"], ep_pool=m["ep_pool"], events=m["ct_events"],
                sync_map=self.obj.map("ct_sync_map"),
                sync_prog=self.obj.program_fd("pl_ct_sync")))
            self.ct.on_deleted = self._sync.note_deleted
        return self._sync

    def close(self) -> None:
        """Release handles. Pinned maps and the attached program stay: flows keep going."""
        if self._sync is not None:
            self._sync.close()
        self.obj.close()

    def destroy(self) -> None:
        """Detach and unpin everything (tests, `pyloxi daemon --cleanup`)."""
        self.detach()
        if self._sync is not None:
            self._sync.close()
        self.obj.close()
        for name in MAP_NAMES:
            path = os.path.join(self.pin_dir, name)
            if os.path.exists(path):
                os.unlink(path)
        if os.path.isdir(self.pin_dir) and not os.listdir(self.pin_dir):
            os.rmdir(self.pin_dir)


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def _ifindex(name: str, what: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise ValueError(f"no interface named {name!r} ({what})") from None
