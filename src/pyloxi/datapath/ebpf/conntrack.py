"""Conntrack as the control plane sees it: read both tables in batches, pair the two entries of
each flow, name their state, and age them out (vectorised: a million entries are one numpy
pass, not a million Python objects).

Two tables (see bpf/include/pyloxi/ct.h): `ct_map` holds established flows and is never evicted,
`ct_half` (an LRU) holds half-open TCP flows and flows of other protocols without a reply yet.
Least-connection counts (conn_map) cover only ct_map: a flow is counted open when the datapath
promotes it there and closed by whoever actually deletes its original-direction entry, so a
flow that two parties delete at once (aging here, a SYN reuse in the datapath) is counted once.
"""

from __future__ import annotations

import ctypes
import errno
import logging
from collections.abc import Callable

import numpy as np

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf import libbpf as _lb
from pyloxi.datapath.ebpf.libbpf import Map
from pyloxi.engine.program import Flow

log = logging.getLogger(__name__)

SEC = 1_000_000_000
KEY128 = np.dtype([("hi", "<u8"), ("lo", "<u8")])

# Per-state timeouts in seconds (the rule's idle timeout applies to established flows).
TIMEOUT_HANDSHAKE = 10
TIMEOUT_FIN = 10
TIMEOUT_RST = 5
TIMEOUT_ONE_WAY = 5  # udp / sctp / icmp flows that never saw a reply
TIMEOUT_ICMP = 20
TIMEOUT_ORPHAN = 10  # an entry whose other half is gone
# Cap for anything still in the half-open table: a flow there was never established, or was
# refused by a full established table (its client got a RST) and lingers only until it idles.
TIMEOUT_HALF = 10

TCP, UDP, ICMP, SCTP = 6, 17, 1, 132
EST, HALF = 0, 1  # Snapshot.table: which map an entry was read from


class Snapshot:
    """Every conntrack entry of both tables at one moment, with each entry's table and its
    partner's index (-1: none). A flow being promoted may briefly show an entry in each table;
    pairing looks across both, so it still reads as one flow."""

    def __init__(self, ct_map: Map, ct_half: Map | None = None) -> None:
        kparts, vparts, tables = [], [], []
        for table, m in ((EST, ct_map), (HALF, ct_half)):
            if m is None:
                continue
            for kraw, vraw, n in m.lookup_batch_raw(batch=65536):
                kparts.append(kraw)
                vparts.append(vraw)
                tables.append(np.full(n, table, dtype=np.uint8))
        kraw, vraw = b"".join(kparts), b"".join(vparts)
        self.raw_keys = np.frombuffer(kraw, dtype=np.dtype("V16"))
        self.keys = np.frombuffer(kraw, dtype=L.CT_KEY_DTYPE)
        self.vals = np.frombuffer(vraw, dtype=L.CT_VAL_DTYPE)
        self.table = np.concatenate(tables) if tables else np.zeros(0, dtype=np.uint8)
        self.partner = self._partners()

    def __len__(self) -> int:
        return len(self.keys)

    def partner_keys(self) -> np.ndarray:
        v = self.vals
        icmp = self.keys["proto"] == ICMP
        pk = np.zeros(len(v), dtype=L.CT_KEY_DTYPE)
        pk["saddr"] = v["nat_daddr"]
        pk["daddr"] = v["nat_saddr"]
        pk["sport"] = np.where(icmp, v["nat_sport"], v["nat_dport"])
        pk["dport"] = np.where(icmp, 0, v["nat_sport"])
        pk["proto"] = self.keys["proto"]
        return pk

    def _partners(self) -> np.ndarray:
        """Index of each entry's partner, by a sort-merge join on 64-bit digests of the 16-byte
        keys (verified on the full keys): structured-array sorts are ~20x slower."""
        n = len(self.keys)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        mine = np.frombuffer(self.keys.tobytes(), dtype=KEY128)
        theirs = np.frombuffer(self.partner_keys().tobytes(), dtype=KEY128)
        d_mine, d_theirs = _digest(mine), _digest(theirs)
        order = np.argsort(d_mine)
        sorted_digests = d_mine[order]
        pos = np.minimum(np.searchsorted(sorted_digests, d_theirs), n - 1)
        cand = order[pos]
        found = (sorted_digests[pos] == d_theirs) & (mine["hi"][cand] == theirs["hi"]) & \
            (mine["lo"][cand] == theirs["lo"])
        return np.where(found, cand, -1)


def _digest(keys: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (keys["hi"] * np.uint64(0x9E3779B97F4A7C15)) ^ keys["lo"]


def flow_states(snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
    """For every entry: the loxilb state name index and the state's timeout class.

    Returned per entry; callers use the original-direction entries."""
    v, k, partner = snap.vals, snap.keys, snap.partner
    mine = v["seen"]
    other = np.where(partner >= 0, v["seen"][np.maximum(partner, 0)], 0)
    # orient: o = what the client side showed, r = what the endpoint side showed
    orig = v["dir"] == L.DIR_ORIG
    o = np.where(orig, mine, other)
    r = np.where(orig, other, mine)
    proto = k["proto"]
    names = np.full(len(v), "", dtype=object)
    timeout = np.zeros(len(v), dtype=np.int64)  # 0: the service's idle timeout

    tcp = proto == TCP
    rst = tcp & (((o | r) & L.CT_RST) != 0)
    fin_both = tcp & ~rst & ((o & L.CT_FIN) != 0) & ((r & L.CT_FIN) != 0)
    fin_one = tcp & ~rst & ~fin_both & (((o | r) & L.CT_FIN) != 0)
    est = tcp & ~rst & ~fin_both & ~fin_one & ((o & L.CT_ACK) != 0) & \
        ((r & (L.CT_SYNACK | L.CT_ACK)) != 0)
    synack = tcp & ~rst & ~fin_both & ~fin_one & ~est & ((r & L.CT_SYNACK) != 0)
    syn = tcp & ~rst & ~fin_both & ~fin_one & ~est & ~synack
    for mask, name, to in ((rst, "closed", TIMEOUT_RST), (fin_both, "closed-wait", TIMEOUT_FIN),
                           (fin_one, "fini", TIMEOUT_FIN), (est, "est", 0),
                           (synack, "sync-ack", TIMEOUT_HANDSHAKE),
                           (syn, "sync-sent", TIMEOUT_HANDSHAKE)):
        names[mask] = name
        timeout[mask] = to

    both = (r & L.CT_SEEN) != 0
    for p, est_name, one_name, est_to, one_to in (
        (UDP, "udp-est", "udp-uni", 0, TIMEOUT_ONE_WAY),
        (ICMP, "bidir", "req-sent", TIMEOUT_ICMP, TIMEOUT_ONE_WAY),
        (SCTP, "est", "init", 0, TIMEOUT_HANDSHAKE),
    ):
        m = proto == p
        names[m & both] = est_name
        timeout[m & both] = est_to
        names[m & ~both] = one_name
        timeout[m & ~both] = one_to
    return names, timeout


def _delete_each(m: Map, keys: list[bytes]) -> np.ndarray:
    """Delete `keys` in batches; returns, per key, whether this call deleted it (False: it was
    already gone, e.g. the datapath deleted it concurrently). Map.delete_batch only counts."""
    done = np.zeros(len(keys), dtype=bool)
    if not keys:
        return done
    ks = m.key_size
    buf = ctypes.create_string_buffer(b"".join(keys), ks * len(keys))
    opts = _lb._MapBatchOpts(sz=ctypes.sizeof(_lb._MapBatchOpts))
    fd, start, n = m._fd(), 0, len(keys)
    while start < n:
        count = ctypes.c_uint32(n - start)
        ret = _lb._bpf_map_delete_batch(fd, ctypes.byref(buf, start * ks), ctypes.byref(count),
                                        opts)
        got = min(count.value, n - start)
        if ret in (-errno.EINVAL, -_lb.ENOTSUPP, -errno.EOPNOTSUPP) and got == 0:
            for i in range(start, n):  # no batch delete for this map type: one by one
                done[i] = m.delete(keys[i])
            return done
        done[start:start + got] = True
        if ret == 0:
            break
        if ret == -errno.ENOENT:  # the kernel stops at the first absent key: skip it
            start += got + 1
            continue
        raise _lb.BpfError(-ret, f"bpf_map_delete_batch({m.name}) after {start + got} keys")
    return done


def _ages(now_ns: int, last: np.ndarray) -> np.ndarray:
    """now - last in signed 64 bits, never below 0: an entry stamped after `now` (clocks read on
    other CPUs) is simply fresh, and nothing wraps around on a machine booted a moment ago."""
    return np.maximum(np.int64(now_ns) - last.astype(np.int64), 0)


class ConntrackTable:
    def __init__(self, ct_map: Map, count_closed: Callable[[np.ndarray, np.ndarray], None],
                 ct_half: Map | None = None) -> None:
        self.map = ct_map
        self.half = ct_half
        self._count_closed = count_closed

    def snapshot(self) -> Snapshot:
        return Snapshot(self.map, self.half)

    def flows(self, engine_id: dict[int, int]) -> list[Flow]:
        """One Flow per connection, from its original-direction entry (dp ids translated)."""
        snap = self.snapshot()
        names, _ = flow_states(snap)
        out = []
        k, v, partner = snap.keys, snap.vals, snap.partner
        for i in np.nonzero(v["dir"] == L.DIR_ORIG)[0]:
            j = partner[i]
            packets = int(v["packets"][i]) + (int(v["packets"][j]) if j >= 0 else 0)
            nbytes = int(v["bytes"][i]) + (int(v["bytes"][j]) if j >= 0 else 0)
            snat = int(v["nat_saddr"][i]) != int(k["saddr"][i])
            proto = int(k["proto"][i])
            out.append(Flow(
                src=L.n_ip(int(k["saddr"][i])), dst=L.n_ip(int(k["daddr"][i])),
                sport=L.n_port(int(k["sport"][i])),
                dport=0 if proto == ICMP else L.n_port(int(k["dport"][i])),
                proto=proto, state=str(names[i]),
                svc_id=engine_id.get(int(v["svc_id"][i]), 0),
                ep_ip=L.n_ip(int(v["nat_daddr"][i])),
                ep_port=0 if proto == ICMP else L.n_port(int(v["nat_dport"][i])),
                snat_ip=L.n_ip(int(v["nat_saddr"][i])) if snat else None,
                snat_port=L.n_port(int(v["nat_sport"][i])) if snat else 0,
                packets=packets, bytes=nbytes,
            ))
        return out

    def _delete(self, snap: Snapshot, idx: np.ndarray) -> np.ndarray:
        """Delete entries `idx` of a snapshot from their tables; returns the indexes of the
        established original-direction entries this call deleted (the flows to count closed)."""
        v, table = snap.vals, snap.table
        half = idx[table[idx] == HALF]
        if len(half) and self.half is not None:
            self.half.delete_batch([bytes(b) for b in snap.raw_keys[half]])
        est = idx[table[idx] == EST]
        orig = est[v["dir"][est] == L.DIR_ORIG]
        rest = est[v["dir"][est] != L.DIR_ORIG]
        if len(rest):
            self.map.delete_batch([bytes(b) for b in snap.raw_keys[rest]])
        if not len(orig):
            return orig
        deleted = _delete_each(self.map, [bytes(b) for b in snap.raw_keys[orig]])
        return orig[deleted]

    def _closed(self, snap: Snapshot, gone: np.ndarray) -> None:
        if len(gone):
            v = snap.vals
            gids = v["svc_id"][gone].astype(np.uint32) * L.MAX_EPS + v["ep_idx"][gone]
            uniq, counts = np.unique(gids, return_counts=True)
            self._count_closed(uniq, counts)

    def age(self, idle_timeout: dict[int, int], now_ns: int) -> int:
        """Delete expired flows (both entries); returns the number of flows removed."""
        snap = self.snapshot()
        if not len(snap):
            return 0
        v, partner = snap.vals, snap.partner
        _, timeout = flow_states(snap)
        svc = v["svc_id"].astype(np.int64)
        if idle_timeout:
            ids = np.fromiter(idle_timeout.keys(), dtype=np.int64)
            tos = np.fromiter(idle_timeout.values(), dtype=np.int64)
            lut = np.full(int(max(ids.max(), svc.max())) + 1, 240, dtype=np.int64)
            lut[ids] = tos
            idle = lut[svc]
        else:
            idle = np.full(len(v), 240, dtype=np.int64)
        timeout = np.where(timeout == 0, idle, timeout)
        has_partner = partner >= 0
        last = np.where(has_partner, np.maximum(v["last_ns"], v["last_ns"][np.maximum(partner, 0)]),
                        v["last_ns"])
        timeout = np.where(has_partner, timeout, np.minimum(timeout, TIMEOUT_ORPHAN))
        timeout = np.where(snap.table == HALF, np.minimum(timeout, TIMEOUT_HALF), timeout)
        expired = _ages(now_ns, last) > timeout * SEC
        if not expired.any():
            return 0
        # a flow goes as a whole: its partner entry is expired too (same `last`, same state)
        idx = np.nonzero(expired)[0]
        self._closed(snap, self._delete(snap, idx))
        log.debug("conntrack aging: %d of %d entries expired", len(idx), len(snap))
        return int(np.count_nonzero(v["dir"][idx] == L.DIR_ORIG)) + \
            int(np.count_nonzero((v["dir"][idx] == L.DIR_REPLY) & ~has_partner[idx]))

    def flush_endpoint(self, ip: int, port: int) -> int:
        """Delete every flow going to endpoint ip:port (network order); returns flows removed."""
        snap = self.snapshot()
        k, v = snap.keys, snap.vals
        orig = (v["dir"] == L.DIR_ORIG) & (v["nat_daddr"] == ip) & (v["nat_dport"] == port)
        reply = (v["dir"] == L.DIR_REPLY) & (k["saddr"] == ip) & (k["sport"] == port)
        idx = np.nonzero(orig | reply)[0]
        if len(idx):
            self._closed(snap, self._delete(snap, idx))
        return int(np.count_nonzero(orig))

    def flush_slots(self, dp_id: int, ep_idx: set[int]) -> int:
        """Delete the flows of some endpoint indexes of a service (an index about to be reused
        by another endpoint); returns entries removed. Their counters are reset by the caller."""
        snap = self.snapshot()
        v = snap.vals
        idx = np.nonzero((v["svc_id"] == dp_id) &
                         np.isin(v["ep_idx"], np.fromiter(ep_idx, dtype=np.uint8)))[0]
        if len(idx):
            self._delete(snap, idx)
        return len(idx)

    def flush_service(self, dp_id: int) -> int:
        """Delete every entry of a service (its counters are zeroed by the caller)."""
        snap = self.snapshot()
        idx = np.nonzero(snap.vals["svc_id"] == dp_id)[0]
        if len(idx):
            self._delete(snap, idx)
        return len(idx)
