"""Conntrack as the control plane sees it: read the whole table in batches, pair the two
entries of each flow, name their state, and age them out (vectorised: a million entries are
one numpy pass, not a million Python objects)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from pyloxi.datapath.ebpf import layout as L
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

TCP, UDP, ICMP, SCTP = 6, 17, 1, 132


class Snapshot:
    """Every conntrack entry at one moment, with each entry's partner index (-1: none)."""

    def __init__(self, ct_map: Map) -> None:
        kparts, vparts = [], []
        for kraw, vraw, _n in ct_map.lookup_batch_raw(batch=65536):
            kparts.append(kraw)
            vparts.append(vraw)
        kraw, vraw = b"".join(kparts), b"".join(vparts)
        self.raw_keys = np.frombuffer(kraw, dtype=np.dtype("V16"))
        self.keys = np.frombuffer(kraw, dtype=L.CT_KEY_DTYPE)
        self.vals = np.frombuffer(vraw, dtype=L.CT_VAL_DTYPE)
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


class ConntrackTable:
    def __init__(self, ct_map: Map, count_closed: Callable[[np.ndarray, np.ndarray], None]) -> None:
        self.map = ct_map
        self._count_closed = count_closed

    def flows(self, engine_id: dict[int, int]) -> list[Flow]:
        """One Flow per connection, from its original-direction entry (dp ids translated)."""
        snap = Snapshot(self.map)
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

    def age(self, idle_timeout: dict[int, int], now_ns: int) -> int:
        """Delete expired flows (both entries); returns the number of flows removed."""
        snap = Snapshot(self.map)
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
        age_ns = now_ns - last.astype(np.int64)
        expired = age_ns > timeout * SEC
        if not expired.any():
            return 0
        # a flow goes as a whole: its partner entry is expired too (same `last`, same state)
        idx = np.nonzero(expired)[0]
        self.map.delete_batch([bytes(b) for b in snap.raw_keys[idx]])
        gone = idx[v["dir"][idx] == L.DIR_ORIG]
        if len(gone):
            gids = v["svc_id"][gone].astype(np.uint32) * L.MAX_EPS + v["ep_idx"][gone]
            uniq, counts = np.unique(gids, return_counts=True)
            self._count_closed(uniq, counts)
        log.debug("conntrack aging: %d of %d entries expired", len(idx), len(snap))
        return len(gone) + int(np.count_nonzero((v["dir"][idx] == L.DIR_REPLY) & ~has_partner[idx]))

    def flush_endpoint(self, ip: int, port: int) -> int:
        """Delete every flow going to endpoint ip:port (network order); returns flows removed."""
        snap = Snapshot(self.map)
        k, v = snap.keys, snap.vals
        orig = (v["dir"] == L.DIR_ORIG) & (v["nat_daddr"] == ip) & (v["nat_dport"] == port)
        reply = (v["dir"] == L.DIR_REPLY) & (k["saddr"] == ip) & (k["sport"] == port)
        idx = np.nonzero(orig | reply)[0]
        if len(idx):
            self.map.delete_batch([bytes(b) for b in snap.raw_keys[idx]])
            gone = np.nonzero(orig)[0]
            gids = v["svc_id"][gone].astype(np.uint32) * L.MAX_EPS + v["ep_idx"][gone]
            uniq, counts = np.unique(gids, return_counts=True)
            self._count_closed(uniq, counts)
        return int(np.count_nonzero(orig))

    def flush_slots(self, dp_id: int, ep_idx: set[int]) -> int:
        """Delete the flows of some endpoint indexes of a service (an index about to be reused
        by another endpoint); returns entries removed. Their counters are reset by the caller."""
        snap = Snapshot(self.map)
        v = snap.vals
        idx = np.nonzero((v["svc_id"] == dp_id) &
                         np.isin(v["ep_idx"], np.fromiter(ep_idx, dtype=np.uint8)))[0]
        if len(idx):
            self.map.delete_batch([bytes(b) for b in snap.raw_keys[idx]])
        return len(idx)

    def flush_service(self, dp_id: int) -> int:
        snap = Snapshot(self.map)
        idx = np.nonzero(snap.vals["svc_id"] == dp_id)[0]
        if len(idx):
            self.map.delete_batch([bytes(b) for b in snap.raw_keys[idx]])
        return len(idx)
