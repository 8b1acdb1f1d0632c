"""Conntrack tables filled fast (bench/ct_scale.py, tests/datapath/test_ct_scale.py): synthetic
established flows written with batch updates, as the datapath itself would have made them."""

from __future__ import annotations

import numpy as np

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.maps import Map

SEC = 10**9


def synthetic_flows(svc_dp_id: int, vip: str, ep: str, flows: int, now: int, first: int = 0,
                    idle_every: int = 10, idle_s: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Keys and values of `flows` established TCP flows of datapath service `svc_dp_id`
    (vip:80 -> ep:8080), both entries of each (original, reply, original, ...); every
    `idle_every`-th flow (flow numbers divisible by it) last seen `idle_s` before `now`, the
    others 1 s before. Clients 10.1.x.y, 60,000 ports each (1024..61023), flows numbered from
    `first`."""
    i = np.arange(first, first + flows, dtype=np.int64)
    mapped = np.frombuffer(L.addr("0.0.0.0")[0], dtype=np.uint8)  # ::ffff:0.0.0.0
    c4 = (0x0A010000 + (i // 60000)).astype(">u4")
    csrc = np.tile(mapped, (flows, 1))
    csrc[:, 12:] = c4.view(np.uint8).reshape(flows, 4)
    csrc = csrc.view("V16").reshape(flows)
    sport = (1024 + i % 60000).astype(">u2").view("<u2")
    vipa, epa = np.full(flows, np.void(L.addr(vip)[0])), np.full(flows, np.void(L.addr(ep)[0]))
    p80 = np.full(flows, 80, dtype=">u2").view("<u2")
    p8080 = np.full(flows, 8080, dtype=">u2").view("<u2")
    # a machine up less than idle_s has no "idle_s ago": those flows just are not expired
    last = np.where(i % idle_every == 0, max(1, now - idle_s * SEC), now - SEC).astype(np.uint64)
    keys = np.zeros(2 * flows, dtype=L.CT_KEY_DTYPE)
    vals = np.zeros(2 * flows, dtype=L.CT_VAL_DTYPE)
    o, r = slice(0, None, 2), slice(1, None, 2)
    keys["saddr"][o], keys["daddr"][o] = csrc, vipa
    keys["sport"][o], keys["dport"][o] = sport, p80
    keys["saddr"][r], keys["daddr"][r] = epa, csrc
    keys["sport"][r], keys["dport"][r] = p8080, sport
    keys["proto"] = 6
    keys["family"] = vals["nat_family"] = L.AF_INET
    vals["nat_saddr"][o], vals["nat_daddr"][o] = csrc, epa
    vals["nat_sport"][o], vals["nat_dport"][o] = sport, p8080
    vals["nat_saddr"][r], vals["nat_daddr"][r] = vipa, csrc
    vals["nat_sport"][r], vals["nat_dport"][r] = p80, sport
    vals["svc_id"] = svc_dp_id
    vals["dir"][o], vals["dir"][r] = L.DIR_ORIG, L.DIR_REPLY
    vals["seen"][o] = L.CT_SEEN | L.CT_SYN | L.CT_ACK
    vals["seen"][r] = L.CT_SEEN | L.CT_SYNACK | L.CT_ACK
    vals["created_ns"] = max(1, now - (idle_s + 100) * SEC)
    vals["last_ns"][o], vals["last_ns"][r] = last, last
    vals["packets"], vals["bytes"] = 10, 1000
    return keys, vals


def write_entries(m: Map, keys: np.ndarray, vals: np.ndarray, step: int = 100_000) -> None:
    """Batch updates (BPF_MAP_UPDATE_BATCH) of `step` entries. Raises BpfError (E2BIG) when
    the table is full."""
    kb, vb = keys.tobytes(), vals.tobytes()  # whole records, zero padding included
    ks, vs = keys.dtype.itemsize, vals.dtype.itemsize
    for s in range(0, len(keys), step):
        e = min(len(keys), s + step)
        m.update_batch([kb[j * ks:(j + 1) * ks] for j in range(s, e)],
                       [vb[j * vs:(j + 1) * vs] for j in range(s, e)])
