"""The datapath's counters as the control plane reads and resets them: per endpoint (ep_stats,
per CPU; conn_map), per service (svc_new, per CPU) and its event counters (stats_map)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.engine.program import EndpointCounters, ServiceCounters


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def service_counters(maps: Mapping[str, Map], dp: int, n_endpoints: int) -> ServiceCounters:
    """Traffic and active flows of the first `n_endpoints` endpoint indexes of service `dp`."""
    stats, conns = maps["ep_stats"], maps["conn_map"]
    eps = []
    tp = tb = 0
    for i in range(n_endpoints):
        gid = _u32(L.ep_gid(dp, i))
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
              for r in maps["svc_new"].lookup_percpu(_u32(dp)) or [])
    return ServiceCounters(packets=tp, bytes=tb, new_flows=new, endpoints=tuple(eps))


def services_counters(maps: Mapping[str, Map],
                      services: Mapping[int, int]) -> dict[int, ServiceCounters]:
    """service_counters of many services at once (`services`: dp id -> endpoints): each
    service's endpoint counters are one contiguous range of ep_stats and conn_map, read with one
    batch call each, and svc_new is read once over the ids in use. The per-CPU slots are
    summed here, never touched by the packet path's CPUs beyond their own increments."""
    if not services:
        return {}
    stats, conns, new_map = maps["ep_stats"], maps["conn_map"], maps["svc_new"]
    ncpu = stats.value_blob_size // 16  # struct counters: 16 bytes, no per-CPU padding
    lo, hi = min(services), max(services)
    new_raw = np.frombuffer(new_map.lookup_array_range(lo, hi - lo + 1), dtype="<u8")
    new_slot = new_map.value_blob_size // 8
    new_per = new_raw.reshape(-1, new_slot).sum(axis=1) if len(new_raw) else new_raw
    out: dict[int, ServiceCounters] = {}
    for dp, n in services.items():
        n = min(n, L.MAX_EPS)
        base = L.ep_gid(dp, 0)
        # ep_stats: n blobs of ncpu slots of (packets, bytes), each slot padded to `slot` bytes
        per = np.frombuffer(stats.lookup_array_range(base, n), dtype="<u8")
        per = per.reshape(n, ncpu, 2).sum(axis=1) if n else \
            np.zeros((0, 2), dtype=np.uint64)
        oc = np.frombuffer(conns.lookup_array_range(base, n), dtype="<u8").reshape(-1, 2)
        eps = tuple(EndpointCounters(packets=int(per[i, 0]), bytes=int(per[i, 1]),
                                     active_flows=max(0, int(oc[i, 0]) - int(oc[i, 1])))
                    for i in range(len(per)))
        i = dp - lo
        out[dp] = ServiceCounters(
            packets=int(per[:, 0].sum()), bytes=int(per[:, 1].sum()),
            new_flows=int(new_per[i]) if i < len(new_per) else 0, endpoints=eps)
    return out


def datapath_stats(stats_map: Map) -> dict[str, int]:
    """Event counters of the datapath (new flows, drops by reason, ...), summed over CPUs."""
    out = {}
    for i, name in enumerate(L.STAT_NAMES):
        vals = stats_map.lookup_percpu(_u32(i)) or []
        out[name] = sum(int.from_bytes(v[:8], "little") for v in vals)
    return out


def zero_endpoints(maps: Mapping[str, Map], dp: int, idxs: Iterable[int]) -> None:
    """Zero the traffic and connection counters of endpoint indexes `idxs` of service `dp`."""
    gids = [_u32(L.ep_gid(dp, i)) for i in idxs]
    maps["ep_stats"].update_batch(gids, [bytes(maps["ep_stats"].value_blob_size)] * len(gids))
    maps["conn_map"].update_batch(gids, [bytes(16)] * len(gids))
