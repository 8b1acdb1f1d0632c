"""Conntrack sync, the backend's part: read the datapath's flow events (ring buffer ct_events),
dump every established flow (full resync), and insert the flows a peer sent (pl_ct_sync).
Events: EST (established, into ct_map), DEL, and NEW (a flow created, best effort: its
half-open entries, into ct_half, so a peer taking over mid-handshake knows the flow).

Records travel as raw ``struct ct_sync_ev`` (maps.h): both entries' keys and values. The ids in
them (svc_id, ep_idx) are node-local, so they never leave it as such: the service is named by
the original key's destination (VIP, port, protocol: exactly its svc_map key) and the endpoint
by the original value's NAT destination (ip:port); an egress SNAT flow (svc_id PL_SVC_EGRESS)
has no service and is taken as it is. The receiver finds its own ids by those,
drops the sender's next-hop cache, puts the time stamps on its own clock, marks the entries
PL_CT_F_SYNCED and inserts them with BPF_NOEXIST: a live local flow always wins.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import Counter
from dataclasses import dataclass

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.datapath.ebpf.libbpf.ringbuf import RingBuffer
from pyloxi.datapath.ebpf.libbpf.testrun import run_syscall_prog

EV_SIZE = ctypes.sizeof(L.CtSyncEv)
_ZERO = bytes(4)
_MAX_DELETED = 1 << 20
_RESULTS = {L.SYNC_R_NONE: "skipped", L.SYNC_R_INSERTED: "inserted",
            L.SYNC_R_REFRESHED: "refreshed", L.SYNC_R_LOCAL: "local_wins",
            L.SYNC_R_FULL: "ct_full", L.SYNC_R_DELETED: "deleted",
            L.SYNC_R_EXISTS: "exists"}


@dataclass
class SyncMaps:
    """The maps and program conntrack sync works with (EbpfDatapath.sync_maps())."""

    ct_map: Map
    svc_map: Map
    gen_map: Map
    ver_map: Map
    ep_pool: Map
    events: Map       # ct_events (ring buffer)
    sync_map: Map     # ct_sync_map
    sync_prog: int    # pl_ct_sync's fd


class FlowSync:
    """Datapath side of conntrack sync for one EbpfDatapath."""

    record_size = EV_SIZE

    def __init__(self, maps: SyncMaps) -> None:
        self.m = maps
        self._ring: RingBuffer | None = None
        self._lock = threading.Lock()  # ct_sync_map has one slot
        self.stats: Counter[str] = Counter()
        self._deleted: list[bytes] = []  # DEL events of the control plane's own deletes
        self._deleted_lock = threading.Lock()

    def note_deleted(self, keys: list[tuple[bytes, bytes]]) -> None:
        """ConntrackTable.on_deleted: established flows the control plane deleted (aging,
        flushes) go to the peers as DEL events with the next batch. Bounded: past the bound
        they are counted lost, and the peers' own aging removes those copies."""
        evs = [bytes(L.CtSyncEv(type=L.SYNC_DEL, layout=L.SYNC_LAYOUT,
                                okey=L.CtKey.from_buffer_copy(o),
                                rkey=L.CtKey.from_buffer_copy(r))) for o, r in keys]
        with self._deleted_lock:
            room = max(0, _MAX_DELETED - len(self._deleted))
            self._deleted.extend(evs[:room])
        if len(evs) > room:
            self.stats["deletes_lost"] += len(evs) - room

    # --- sender ---

    def events(self) -> list[bytes]:
        """The flow events the datapath reported since the last call (raw ct_sync_ev)."""
        if self._ring is None:
            self._ring = RingBuffer(self.m.events.fd)
        out = [r[:EV_SIZE] for r in self._ring.consume() if len(r) >= EV_SIZE]
        with self._deleted_lock:
            out += self._deleted
            self._deleted = []
        return out

    def dump(self) -> list[bytes]:
        """Every established flow as an EST event (for a full resync). Half-open flows are
        left out: they are seconds old at most, a SYN flood fills their table with spoofed
        ones, and the creation events are best effort by design (maps.h PL_SYNC_NEW)."""
        entries = dict(self.m.ct_map.lookup_batch())
        out = []
        for k, v in entries.items():
            val = L.CtVal.from_buffer_copy(v)
            if val.dir != L.DIR_ORIG:
                continue
            key = L.CtKey.from_buffer_copy(k)
            rk = _partner_key(val, key.proto)
            rv = entries.get(bytes(rk))
            if rv is None:
                continue  # being deleted right now
            ev = L.CtSyncEv(type=L.SYNC_EST, layout=L.SYNC_LAYOUT, okey=key, rkey=rk, oval=val,
                            rval=L.CtVal.from_buffer_copy(rv))
            out.append(bytes(ev))
        return out

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    # --- receiver ---

    def apply(self, records: list[bytes], sender_now_ns: int) -> Counter[str]:
        """Insert (or delete) the flows of a peer's events. *sender_now_ns*: the sender's
        CLOCK_MONOTONIC when it sent them (its entries' time stamps are on that clock)."""
        now = time.monotonic_ns()
        ready: list[L.CtSyncEv] = []
        done: Counter[str] = Counter()
        services: dict[bytes, tuple[int, list[L.EpVal]] | None] = {}
        for raw in records:
            ev = L.CtSyncEv.from_buffer_copy(raw[:EV_SIZE])
            if ev.layout != L.SYNC_LAYOUT:  # a peer of another datapath layout
                done["layout_mismatch"] += 1
                continue
            if ev.type == L.SYNC_DEL:
                ready.append(ev)
                continue
            if ev.type not in (L.SYNC_EST, L.SYNC_NEW) or ev.oval.mode == L.MODE_DSR:
                done["skipped"] += 1
                continue
            local = self._local_ids(ev, services)
            if local is None:
                done["unknown_service"] += 1
                continue
            svc_id, ep_idx, gid = local
            for val in (ev.oval, ev.rval):
                val.svc_id, val.ep_idx, val.ep_gid = svc_id, ep_idx, gid
                val.flags |= L.CT_F_SYNCED
                # the sender's next hop means nothing here
                val.fib_ifindex = val.fib_tick = val.fib_mtu = 0
                ctypes.memset(ctypes.addressof(val.fib_smac), 0, 12)
                # this node's clock; same age as on the sender
                age = max(0, sender_now_ns - val.last_ns)
                val.last_ns = max(0, now - age)
                val.created_ns = now
                # the window state is a snapshot from the establishment (or the SYN): judge
                # no RST/FIN by it (Linux's "be liberal" for flows picked up mid-stream). A
                # half-open copy is then established here by the endpoint's first answer
                # that is not a reset, as a picked-up flow is (conntrack.h ct_half_open).
                val.td_flags |= L.TD_LIBERAL
            ready.append(ev)
        for start in range(0, len(ready), L.SYNC_BATCH):
            done.update(self._run(ready[start:start + L.SYNC_BATCH]))
        self.stats.update(done)
        return done

    def _local_ids(self, ev: L.CtSyncEv, services: dict[bytes, tuple[int, list[L.EpVal]] | None],
                   ) -> tuple[int, int, int] | None:
        """(svc_id, ep_idx, ep_gid) of the flow on this node, or None."""
        if ev.oval.svc_id == L.SVC_EGRESS:
            # an egress SNAT flow has no service: its reserved id means the same on every
            # node, and its rewrite (toIP, port from this sender's share of the range) is all
            # it needs; taken whether or not this node's SNAT rules are active (a BACKUP's
            # are not), so the flow goes on when this node takes over
            return L.SVC_EGRESS, ev.oval.ep_idx, L.GID_NONE
        k = ev.okey
        skey = bytes(L.SvcKey(vip=k.daddr, port=k.dport, proto=k.proto, family=k.family))
        if skey not in services:
            services[skey] = self._live_version(skey)
        svc = services[skey]
        if svc is None:
            return None
        svc_id, eps = svc
        ip, port = bytes(ev.oval.nat_daddr), ev.oval.nat_dport
        for i, ep in enumerate(eps):
            if bytes(ep.ip) == ip and (ep.port == port or (ep.port == 0 and port == k.dport)):
                return svc_id, i, ep.gid
        return None

    def _live_version(self, skey: bytes) -> tuple[int, list[L.EpVal]] | None:
        """The service id of a service key and the endpoints of its live version."""
        raw = self.m.svc_map.lookup(skey)
        if raw is None:
            return None
        svc_id = L.SvcVal.from_buffer_copy(raw).svc_id
        gen = self.m.gen_map.lookup(svc_id.to_bytes(4, "little"))
        g = (int.from_bytes(gen, "little") & 1) if gen else 0
        ver = self.m.ver_map.lookup((svc_id * 2 + g).to_bytes(4, "little"))
        if not ver:
            return None
        cfg = L.SvcVer.from_buffer_copy(ver).cfg
        n = min(cfg.n_eps, L.MAX_EPS)
        raw = self.m.ep_pool.lookup_array_range(cfg.ep_base, n) if n else b""
        size = ctypes.sizeof(L.EpVal)
        return svc_id, [L.EpVal.from_buffer_copy(raw, i * size) for i in range(n)]

    def _run(self, evs: list[L.CtSyncEv]) -> Counter[str]:
        req = L.CtSyncReq(n=len(evs))
        for i, ev in enumerate(evs):
            req.ev[i] = ev
        with self._lock:
            self.m.sync_map.update(_ZERO, bytes(req))
            ret = run_syscall_prog(self.m.sync_prog)
            raw = self.m.sync_map.lookup(_ZERO)
        if ret != 0 or raw is None:
            raise RuntimeError(f"pl_ct_sync failed ({ret})")
        out = L.CtSyncReq.from_buffer_copy(raw)
        return Counter(_result(evs[i].type, out.ev[i].result) for i in range(len(evs)))


def _result(ev_type: int, result: int) -> str:
    """The counter name of one applied event: a NEW event's insert or refresh is a half-open
    copy ("half_inserted"), not an established flow ("inserted")."""
    name = _RESULTS.get(result, "skipped")
    if ev_type == L.SYNC_NEW and result in (L.SYNC_R_INSERTED, L.SYNC_R_REFRESHED):
        return "half_" + name
    return name


def _partner_key(v: L.CtVal, proto: int) -> L.CtKey:
    """partner_key() of ct.h."""
    icmp = proto == 1
    return L.CtKey(saddr=v.nat_daddr, daddr=v.nat_saddr,
                   sport=v.nat_sport if icmp else v.nat_dport,
                   dport=0 if icmp else v.nat_sport, proto=proto, family=v.nat_family)
