"""Conntrack as the control plane sees it: read both tables in batches, pair the two entries of
each flow, name their state, and age them out (vectorised: a million entries are one numpy
pass, not a million Python objects).

Two tables (see bpf/include/pyloxi/conntrack.h): `ct_map` holds established flows and is never
evicted, `ct_half` (an LRU) holds half-open TCP flows and flows of other protocols without a reply
yet.
DSR flows (mode dsr) have one entry, the client's, in ct_half and no partner by design (the LB
never sees a reply): they are no orphans, they read as established once the client's ACK (or any
packet of another protocol) was seen, and they age on the rule's idle timeout.
Least-connection counts (conn_map) cover only ct_map: a flow is counted open when the datapath
promotes it there and closed by whoever actually deletes its original-direction entry, so a
flow that two parties delete at once (aging here, a SYN reuse in the datapath) is counted once.

Every delete here is decided on a snapshot and carried out later (up to a second on a big
table), by which time a client reusing its port may have started a new flow on the same key.
So nothing is deleted by key alone: the pl_ct_delete program deletes an entry only if the key
still holds the entry the snapshot saw (same created_ns, service, endpoint and direction), and
counts the close of what it deleted, in the kernel, next to the lookup.
"""

from __future__ import annotations

import logging
import mmap
import sys
import threading
from collections.abc import Callable

import numpy as np

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.datapath.ebpf.libbpf.testrun import run_syscall_prog
from pyloxi.engine.program import Flow

log = logging.getLogger(__name__)

SEC = 1_000_000_000
_KEY_WORDS = L.CT_KEY_DTYPE.itemsize // 8  # a ct_key as 64-bit words (40 bytes: 5)
_BATCH = 131072  # entries per bpf_map_lookup_batch call of a sweep
_VAL_OFF = {name: int(L.CT_VAL_DTYPE.fields[name][1])  # type: ignore[index]
            for name in ("nat_sport", "nat_dport", "nat_family")}
# _partner_words_of reads the two ports as one 32-bit field, within one 64-bit word
assert _VAL_OFF["nat_dport"] == _VAL_OFF["nat_sport"] + 2 and _VAL_OFF["nat_sport"] % 8 <= 4

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
TIMEOUT_SCTP_CLOSE = 10  # sctp shutdown, shut-complete, abort (loxilb: 10 s)

TCP, UDP, ICMP, SCTP = 6, 17, 1, 132
EST, HALF = L.CT_DEL_EST, L.CT_DEL_HALF  # Snapshot.table: which map an entry was read from
_ZERO = bytes(4)
_SC_ANY = (L.CT_SC_INIT | L.CT_SC_INITACK | L.CT_SC_COOKIE | L.CT_SC_COOKIEACK | L.CT_SC_DATA |
           L.CT_SC_SHUT | L.CT_SC_SHUTACK | L.CT_SC_SHUTDONE | L.CT_SC_ABORT)


def snapshot_buffers(ct_map: Map, ct_half: Map | None,
                     touch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Key and value buffers a Snapshot of both tables reads into, sized to hold them full:
    uninitialised (numpy: malloc, a page is touched only when an entry lands in it), not
    bytearray(n), which writes zeros over all of it. `touch`: entries whose pages are written
    now (one byte a page), so that they are faulted in here rather than inside the kernel's
    batch read; the rest stays untouched (not resident) until a sweep needs it."""
    cap = ct_map.max_entries + (ct_half.max_entries if ct_half is not None else 0) + _BATCH
    bufs = (np.empty(L.CT_KEY_DTYPE.itemsize * cap, np.uint8),
            np.empty(L.CT_VAL_DTYPE.itemsize * cap, np.uint8))
    rows = min(cap, touch)
    for b, size in zip(bufs, (L.CT_KEY_DTYPE.itemsize, L.CT_VAL_DTYPE.itemsize), strict=True):
        b[:rows * size:mmap.PAGESIZE] = 0
    return bufs


class Snapshot:
    """Every conntrack entry of both tables at one moment, with each entry's table and its
    partner's index (-1: none). A flow being promoted may briefly show an entry in each table;
    pairing looks across both, so it still reads as one flow."""

    def __init__(self, ct_map: Map, ct_half: Map | None = None,
                 buffers: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """`buffers`: from snapshot_buffers(), to read into (the caller keeps them unused by
        anything else for as long as this snapshot lives)."""
        maps = [(t, m) for t, m in ((EST, ct_map), (HALF, ct_half)) if m is not None]
        # both tables straight into one pair of buffers: no bytes object per batch, no join,
        # no concatenation (at 2M entries each copy of the values is 256 MB of memcpy)
        if buffers is None:
            buffers = snapshot_buffers(ct_map, ct_half)
        kb: bytearray | memoryview = buffers[0].data
        vb: bytearray | memoryview = buffers[1].data
        n, tables = 0, []
        for table, m in maps:
            kb, vb, got = m.lookup_batch_all(_BATCH, kb, vb, n)
            tables.append(np.full(got - n, table, dtype=np.uint8))
            n = got
        kbuf = np.frombuffer(kb, dtype=np.uint8, count=n * L.CT_KEY_DTYPE.itemsize)
        vbuf = np.frombuffer(vb, dtype=np.uint8, count=n * L.CT_VAL_DTYPE.itemsize)
        self.raw_keys = kbuf.view(np.dtype(f"V{L.CT_KEY_DTYPE.itemsize}"))
        self.keys = kbuf.view(L.CT_KEY_DTYPE)
        self.vals = vbuf.view(L.CT_VAL_DTYPE)
        self.table = np.concatenate(tables) if tables else np.zeros(0, dtype=np.uint8)
        self.partner = self._partners()

    def __len__(self) -> int:
        return len(self.keys)

    def partner_keys(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The key of each entry's partner (of entries `idx` only, if given)."""
        v = self.vals if idx is None else self.vals[idx]
        proto = self.keys["proto"] if idx is None else self.keys["proto"][idx]
        icmp = proto == ICMP
        pk = np.zeros(len(v), dtype=L.CT_KEY_DTYPE)
        pk["saddr"] = v["nat_daddr"]
        pk["daddr"] = v["nat_saddr"]
        pk["sport"] = np.where(icmp, v["nat_sport"], v["nat_dport"])
        pk["dport"] = np.where(icmp, 0, v["nat_sport"])
        pk["proto"] = proto
        pk["family"] = v["nat_family"]
        return pk

    def _partner_words(self, n: int) -> list[np.ndarray]:
        if sys.byteorder == "little":
            return _partner_words_of(self.raw_keys, self.vals, n)
        return _words(self.partner_keys().view(self.raw_keys.dtype), n)

    def _partners(self) -> np.ndarray:
        """Index of each entry's partner. An entry's key digest and its partner key's digest
        are the same pair for both entries of a flow, swapped: one sort by a symmetric hash of
        the pair puts the two side by side. One sort of 64-bit integers, where looking every
        partner up in a sorted index (searchsorted with random queries: a cache miss per step)
        cost four times as much at 2M entries. Two neighbours are partners when each one's
        partner digest is the other's key digest: 128 bits that agree, of a mix that sends
        every bit of a key to every bit of its digest (comparing the 40-byte keys themselves
        cost a third of the sweep's pairing in random reads). Entries left without a mutual
        partner look theirs up the old way."""
        n = len(self.keys)
        index = np.full(n, -1, dtype=np.int64)
        if n < 2:
            return index
        d_mine = _digest(_words(self.raw_keys, n))
        d_theirs = _digest(self._partner_words(n))
        pair = _pair_hash(d_mine, d_theirs)
        order = np.argsort(pair)
        sp = pair[order]
        same = sp[1:] == sp[:-1]
        a, b = order[:-1][same], order[1:][same]
        _verify_pairs(a, b, index, d_mine, d_theirs)
        # The rest: orphans, DSR entries (no partner by design), an SCTP path's original
        # entry whose reply entry is shared with the flow's first path (its partner points
        # elsewhere: not mutual), and entries three or more of which share a pair hash (a
        # 64-bit collision: about never). Few: each looks its partner key up in a sorted
        # index of the digests, checked on the whole key.
        rest = np.nonzero(index < 0)[0]
        if len(rest):
            by = np.argsort(d_mine)
            sd = d_mine[by]
            pos = np.minimum(np.searchsorted(sd, d_theirs[rest]), n - 1)
            cand = by[pos]
            ok = sd[pos] == d_theirs[rest]
            theirs = self.partner_keys(rest).view(self.raw_keys.dtype)
            ok &= theirs == self.raw_keys[cand]
            index[rest[ok]] = cand[ok]
        return index


def _partner_words_of(keys: np.ndarray, vals: np.ndarray, n: int) -> list[np.ndarray]:
    """What _words(partner keys) gives, computed on the 64-bit words of the raw values (no
    structured array built): the partner key is the value's nat_daddr, nat_saddr, its ports
    swapped (icmp: the identifier and 0), the key's protocol and the value's nat_family.
    Little-endian words of ct_key / ct_val, at the offsets layout.py has (checked against the
    object's BTF)."""
    k = np.ascontiguousarray(keys).view("<u8").reshape(n, _KEY_WORDS)
    v = np.ascontiguousarray(vals).view("<u8").reshape(n, L.CT_VAL_DTYPE.itemsize // 8)
    w_ports, sh_ports = divmod(_VAL_OFF["nat_sport"], 8)  # nat_sport | nat_dport << 16
    w_fam, sh_fam = divmod(_VAL_OFF["nat_family"], 8)
    ports = (v[:, w_ports] >> np.uint64(sh_ports * 8)) & np.uint64(0xFFFFFFFF)
    swapped = (ports >> np.uint64(16)) | ((ports & np.uint64(0xFFFF)) << np.uint64(16))
    proto = (k[:, 4] >> np.uint64(32)) & np.uint64(0xFF)
    lo = np.where(proto == ICMP, ports & np.uint64(0xFFFF), swapped)
    fam = (v[:, w_fam] >> np.uint64(sh_fam * 8)) & np.uint64(0xFF)
    return [v[:, 2], v[:, 3], v[:, 0], v[:, 1],
            lo | (proto << np.uint64(32)) | (fam << np.uint64(40))]


def _pair_hash(d_mine: np.ndarray, d_theirs: np.ndarray) -> np.ndarray:
    """The same for an entry and its partner (their digests swapped)."""
    return _mix(np.minimum(d_mine, d_theirs) ^ _mix(np.maximum(d_mine, d_theirs)))


def _verify_pairs(a: np.ndarray, b: np.ndarray, index: np.ndarray, d_mine: np.ndarray,
                  d_theirs: np.ndarray) -> None:
    """Candidates b[i] for the partner of a[i], and a[i] for that of b[i]: set where each
    one's partner digest is the other's key digest."""
    ok = (d_theirs[a] == d_mine[b]) & (d_theirs[b] == d_mine[a])
    index[a[ok]] = b[ok]
    index[b[ok]] = a[ok]


def _words(raw: np.ndarray, n: int) -> list[np.ndarray]:
    """The keys (as opaque V40 records: numpy copies of a structured array leave its padding
    bytes uninitialised, so a key is only ever copied whole) as _KEY_WORDS columns of 64-bit
    words (strided views: _digest reads each once)."""
    m = np.ascontiguousarray(raw).view("<u8").reshape(n, _KEY_WORDS)
    return [m[:, w] for w in range(_KEY_WORDS)]


def _mix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit reaches every output bit (a multiply
    alone only carries bits upward, and keys differing in a few high bits collide)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(33))
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xC4CEB9FE1A85EC53)
        x ^= x >> np.uint64(33)
    return x


def _digest(words: list[np.ndarray]) -> np.ndarray:
    digest = _mix(words[0])
    for w in words[1:]:
        digest = _mix(digest ^ w)
    return digest


# loxilb's state names; state codes (state_codes) index this
STATE_NAMES = ("", "closed", "closed-wait", "fini", "est", "sync-ack", "sync-sent", "udp-est",
               "udp-uni", "bidir", "req-sent", "abort", "shut-complete", "shut-ack", "shut",
               "cookie-echo", "init-ack", "init")
_CODE = {name: i for i, name in enumerate(STATE_NAMES)}
_NAMES = np.array(STATE_NAMES, dtype=object)


def flow_states(snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
    """For every entry: the loxilb state name and the state's timeout class.

    Returned per entry; callers use the original-direction entries."""
    codes, timeout = state_codes(snap)
    return _NAMES[codes], timeout


def state_codes(snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
    """flow_states with each state as its index in STATE_NAMES (a sweep of 2M entries counts
    states by small integers, not by 2M Python strings)."""
    v, k, partner = snap.vals, snap.keys, snap.partner
    mine = v["seen"]
    other = np.where(partner >= 0, v["seen"][np.maximum(partner, 0)], 0)
    # orient: o = what the client side showed, r = what the endpoint side showed
    orig = v["dir"] == L.DIR_ORIG
    o = np.where(orig, mine, other)
    r = np.where(orig, other, mine)
    # DSR: the endpoint answers the client directly; what it showed is taken from the client's
    # side (an ACK means the handshake completed, any packet that the flow is alive)
    dsr = v["mode"] == L.MODE_DSR
    r = np.where(dsr, np.where((o & L.CT_ACK) != 0, L.CT_SYNACK, 0) | L.CT_SEEN, r)
    proto = k["proto"]
    names = np.zeros(len(v), dtype=np.uint8)  # STATE_NAMES indexes
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
        names[mask] = _CODE[name]
        timeout[mask] = to

    both = (r & L.CT_SEEN) != 0
    for p, est_name, one_name, est_to, one_to in (
        (UDP, "udp-est", "udp-uni", 0, TIMEOUT_ONE_WAY),
        (ICMP, "bidir", "req-sent", TIMEOUT_ICMP, TIMEOUT_ONE_WAY),
    ):
        m = proto == p
        names[m & both] = _CODE[est_name]
        timeout[m & both] = est_to
        names[m & ~both] = _CODE[one_name]
        timeout[m & ~both] = one_to
    _sctp_states(proto == SCTP, o, r, names, timeout)
    return names, timeout


def _sctp_states(sctp: np.ndarray, o: np.ndarray, r: np.ndarray, names: np.ndarray,
                 timeout: np.ndarray) -> None:
    """SCTP association states (loxilb's names) from the first-chunk bits of both directions
    (bpf/include/pyloxi/sctp.h), latest stage first: a closed association is closed whatever
    it went through. Established: the rule's idle timeout; every other state 10 s (loxilb)."""
    both = o | r
    data_both = ((o & L.CT_SC_DATA) != 0) & ((r & L.CT_SC_DATA) != 0)
    left = sctp.copy()
    for mask, name, to in (
        ((both & L.CT_SC_ABORT) != 0, "abort", TIMEOUT_SCTP_CLOSE),
        ((both & L.CT_SC_SHUTDONE) != 0, "shut-complete", TIMEOUT_SCTP_CLOSE),
        ((both & L.CT_SC_SHUTACK) != 0, "shut-ack", TIMEOUT_SCTP_CLOSE),
        ((both & L.CT_SC_SHUT) != 0, "shut", TIMEOUT_SCTP_CLOSE),
        (((both & L.CT_SC_COOKIEACK) != 0) | data_both, "est", 0),
        ((both & L.CT_SC_COOKIE) != 0, "cookie-echo", TIMEOUT_HANDSHAKE),
        ((both & L.CT_SC_INITACK) != 0, "init-ack", TIMEOUT_HANDSHAKE),
        # entries of a datapath without chunk bits: established once both ways were seen
        (((both & _SC_ANY) == 0) & ((r & L.CT_SEEN) != 0), "est", 0),
        (np.ones(len(o), dtype=bool), "init", TIMEOUT_HANDSHAKE),
    ):
        m = left & mask
        names[m] = _CODE[name]
        timeout[m] = to
        left &= ~mask


def _summarise(snap: Snapshot, codes: np.ndarray,
               gone: np.ndarray) -> dict[tuple[int, str], int]:
    """Flows (original-direction entries) by (protocol, state), leaving out entries `gone`;
    `codes`: state_codes(snap)[0]."""
    keep = snap.vals["dir"] == L.DIR_ORIG
    keep[gone] = False
    cell = snap.keys["proto"][keep].astype(np.int64) * len(STATE_NAMES) + codes[keep]
    counts = np.bincount(cell, minlength=256 * len(STATE_NAMES))
    return {(int(c) // len(STATE_NAMES), STATE_NAMES[int(c) % len(STATE_NAMES)]): int(counts[c])
            for c in np.nonzero(counts)[0]}


def _ages(now_ns: int, last: np.ndarray) -> np.ndarray:
    """now - last in signed 64 bits, never below 0: an entry stamped after `now` (clocks read on
    other CPUs) is simply fresh, and nothing wraps around on a machine booted a moment ago."""
    ages: np.ndarray = np.maximum(np.int64(now_ns) - last.astype(np.int64), 0)
    return ages


class ConntrackTable:
    def __init__(self, ct_map: Map, ct_half: Map | None, del_map: Map, del_prog: int) -> None:
        """`del_map`/`del_prog`: ct_del_map and the pl_ct_delete program's fd."""
        self.map = ct_map
        self.half = ct_half
        self._del_map = del_map
        self._del_prog = del_prog
        # ct_del_map has one slot: the aging loop and a flush (API thread) must not interleave
        # their write / run / read-back
        self._del_lock = threading.Lock()
        # conntrack sync (ctsync.py): told the (original, reply) keys of every established flow
        # the control plane deleted (aging, flushes), which the datapath's ring never sees
        self.on_deleted: Callable[[list[tuple[bytes, bytes]]], None] | None = None
        self._summary: dict[tuple[int, str], int] | None = None  # by the last aging sweep
        # The aging sweep's read buffers, kept from one sweep to the next: the kernel's batch
        # read into fresh memory faults inside copy_to_user (0.1-1.2 s of CPU at 2M entries
        # on a VM). The daemon faults them in at start (prepare_sweep, off the sweep's
        # clock), so its RSS holds them from then on: 168 B per entry of both tables' room
        # (0.4 GB at 2M + 256K). Without that, the first sweep allocates them and they keep
        # the size of the largest table swept. One sweep at a time uses them.
        self._sweep_lock = threading.Lock()
        self._sweep_buffers: tuple[np.ndarray, np.ndarray] | None = None
        self._local = threading.local()  # .buffers: what snapshot() reads into, if set

    def snapshot(self) -> Snapshot:
        return Snapshot(self.map, self.half, getattr(self._local, "buffers", None))

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
            # DSR never translates (an IPIP flow's nat_saddr is its outer source)
            snat = bytes(v["nat_saddr"][i]) != bytes(k["saddr"][i]) and \
                int(v["mode"][i]) != L.MODE_DSR
            proto = int(k["proto"][i])
            egress = int(v["svc_id"][i]) == L.SVC_EGRESS
            out.append(Flow(
                src=L.addr_text(k["saddr"][i]), dst=L.addr_text(k["daddr"][i]),
                sport=L.n_port(int(k["sport"][i])),
                dport=0 if proto == ICMP else L.n_port(int(k["dport"][i])),
                proto=proto, state=str(names[i]),
                svc_id=engine_id.get(int(v["svc_id"][i]), 0),
                ep_ip=L.addr_text(v["nat_daddr"][i]),
                ep_port=0 if proto == ICMP else L.n_port(int(v["nat_dport"][i])),
                snat_ip=L.addr_text(v["nat_saddr"][i]) if snat else None,
                snat_port=L.n_port(int(v["nat_sport"][i])) if snat else 0,
                packets=packets, bytes=nbytes, egress=egress,
                egress_fixed=egress and int(v["ep_idx"][i]) == L.EGRESS_F_FIXED,
            ))
        return out

    def _delete(self, snap: Snapshot, idx: np.ndarray) -> np.ndarray:
        """Delete entries `idx` of a snapshot from their tables, each only if its key still holds
        that entry (pl_ct_delete); returns, per entry of `idx`, whether this call deleted it.
        The kernel counts the established flows whose original entry it deleted as closed."""
        v, table = snap.vals, snap.table
        # half-open entries, then established reply entries, then the original ones (which
        # count the close): the order the datapath itself deletes a flow in
        rank = np.where(table[idx] == HALF, 0, np.where(v["dir"][idx] == L.DIR_ORIG, 2, 1))
        order = np.argsort(rank, kind="stable")
        sel = idx[order]
        items = np.zeros(len(sel), dtype=L.CT_DEL_ITEM_DTYPE)
        items["key"] = snap.raw_keys[sel]
        for f in ("created_ns", "svc_id", "ep_idx", "dir"):
            items[f] = v[f][sel]
        items["table"] = table[sel]
        done = np.zeros(len(sel), dtype=bool)
        req = np.zeros(1, dtype=L.CT_DEL_REQ_DTYPE)
        for start in range(0, len(sel), L.CT_DEL_BATCH):
            chunk = items[start:start + L.CT_DEL_BATCH]
            req["n"] = len(chunk)
            req["item"][0, :len(chunk)] = chunk  # beyond n: stale items the program ignores
            with self._del_lock:
                self._del_map.update(_ZERO, req.tobytes())
                ret = run_syscall_prog(self._del_prog)
                raw = self._del_map.lookup(_ZERO)
            if ret != 0 or raw is None:
                raise RuntimeError(f"pl_ct_delete failed ({ret})")
            out = np.frombuffer(raw, dtype=L.CT_DEL_REQ_DTYPE)
            done[start:start + len(chunk)] = out["item"][0, :len(chunk)]["deleted"] != 0
        deleted = np.zeros(len(idx), dtype=bool)
        deleted[order] = done
        if self.on_deleted is not None:
            gone = idx[deleted]
            gone = gone[(table[gone] == EST) & (v["dir"][gone] == L.DIR_ORIG)]
            if len(gone):
                # as opaque records: a structured copy would leave the keys' pad bytes
                # uninitialised, and a peer would look up garbage
                pk = snap.partner_keys().view(snap.raw_keys.dtype)[gone]
                self.on_deleted([(bytes(snap.raw_keys[i]), bytes(pk[j]))
                                 for j, i in enumerate(gone)])
        return deleted

    def expired(self, snap: Snapshot, idle_timeout: dict[int, int], now_ns: int,
                states: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Indexes of the snapshot's entries that are expired at `now_ns` (a flow's two entries
        share `last` and state, so both are in or both are out). `states`: state_codes(snap)
        if the caller has it already."""
        if not len(snap):
            return np.zeros(0, dtype=np.int64)
        v, partner = snap.vals, snap.partner
        _, timeout = states if states is not None else state_codes(snap)
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
        # DSR entries live in ct_half without a partner by design: neither cap applies
        dsr = v["mode"] == L.MODE_DSR
        timeout = np.where(has_partner | dsr, timeout, np.minimum(timeout, TIMEOUT_ORPHAN))
        timeout = np.where((snap.table == HALF) & ~dsr, np.minimum(timeout, TIMEOUT_HALF),
                           timeout)
        return np.nonzero(_ages(now_ns, last) > timeout * SEC)[0]

    @staticmethod
    def _flows_removed(snap: Snapshot, idx: np.ndarray, deleted: np.ndarray) -> int:
        """Flows removed, by what was actually deleted: original entries, and reply entries
        whose original was not in the snapshot (orphans)."""
        gone = idx[deleted]
        d = snap.vals["dir"][gone]
        return int(np.count_nonzero(d == L.DIR_ORIG)) + \
            int(np.count_nonzero((d == L.DIR_REPLY) & (snap.partner[gone] < 0)))

    def prepare_sweep(self, entries: int) -> None:
        """Allocate the aging sweep's read buffers now (daemon start) and fault in the part a
        sweep of `entries` entries fills, not in the first sweep: a daemon restarted on a full
        table would pay those page faults inside it (0.5 s of CPU at 2M entries on a fresh
        VM); a daemon with few flows keeps the rest of the 399 MiB room unresident."""
        with self._sweep_lock:
            if self._sweep_buffers is None:
                self._sweep_buffers = snapshot_buffers(self.map, self.half, touch=entries)

    def age(self, idle_timeout: dict[int, int], now_ns: int) -> int:
        """Delete expired flows (both entries); returns the number of flows removed. Leaves
        the flows that stay counted by protocol and state in `summary()` (metrics)."""
        with self._sweep_lock:
            if self._sweep_buffers is None:
                self._sweep_buffers = snapshot_buffers(self.map, self.half)
            self._local.buffers = self._sweep_buffers  # snapshot(), in this thread only
            try:
                snap = self.snapshot()
            finally:
                self._local.buffers = None
            return self._age(snap, idle_timeout, now_ns)

    def _age(self, snap: Snapshot, idle_timeout: dict[int, int], now_ns: int) -> int:
        states = state_codes(snap) if len(snap) else None
        idx = self.expired(snap, idle_timeout, now_ns, states)
        deleted = self._delete(snap, idx) if len(idx) else np.zeros(0, dtype=bool)
        if states is not None:
            self._summary = _summarise(snap, states[0], idx[deleted])
        else:
            self._summary = {}
        if not len(idx):
            return 0
        log.debug("conntrack aging: %d of %d entries expired, %d deleted", len(idx), len(snap),
                  int(np.count_nonzero(deleted)))
        return self._flows_removed(snap, idx, deleted)

    def summary(self) -> dict[tuple[int, str], int]:
        """Flows by (IP protocol, loxilb state name) as the last aging sweep left them; a fresh
        read when none ran yet. Metrics reuse the sweep's snapshot: a scrape costs no extra
        pass over a table of hundreds of thousands of entries."""
        if self._summary is None:
            snap = self.snapshot()
            self._summary = _summarise(snap, state_codes(snap)[0], np.zeros(0, dtype=np.int64)) \
                if len(snap) else {}
        return dict(self._summary)

    def flush_endpoint(self, ip: bytes, port: int) -> int:
        """Delete every flow going to endpoint ip:port (`ip`: its 16 bytes as `layout.addr`
        gives them; port in network order); returns flows removed."""
        snap = self.snapshot()
        k, v = snap.keys, snap.vals
        addr = np.void(ip)
        orig = (v["dir"] == L.DIR_ORIG) & (v["nat_daddr"] == addr) & (v["nat_dport"] == port)
        reply = (v["dir"] == L.DIR_REPLY) & (k["saddr"] == addr) & (k["sport"] == port)
        idx = np.nonzero(orig | reply)[0]
        if not len(idx):
            return 0
        return self._flows_removed(snap, idx, self._delete(snap, idx))

    def flush_slots(self, dp_id: int, ep_idx: set[int]) -> int:
        """Delete the flows of some endpoint indexes of a service (an index about to be reused
        by another endpoint); returns entries removed. Their counters are reset by the caller."""
        snap = self.snapshot()
        v = snap.vals
        idx = np.nonzero((v["svc_id"] == dp_id) &
                         np.isin(v["ep_idx"], np.fromiter(ep_idx, dtype=np.uint16)))[0]
        if not len(idx):
            return 0
        return int(np.count_nonzero(self._delete(snap, idx)))

    def flush_service(self, dp_id: int) -> int:
        """Delete every entry of a service (its counters are zeroed by the caller)."""
        snap = self.snapshot()
        idx = np.nonzero(snap.vals["svc_id"] == dp_id)[0]
        if not len(idx):
            return 0
        return int(np.count_nonzero(self._delete(snap, idx)))
