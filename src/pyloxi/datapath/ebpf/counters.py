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


def _runs(gids: list[int]) -> list[tuple[int, int]]:
    """(first, count) of each run of consecutive ids in `gids` (in order): the ids of a
    service's endpoints are mostly handed out together, so a few batch reads cover them."""
    out: list[tuple[int, int]] = []
    for g in gids:
        if out and out[-1][0] + out[-1][1] == g:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((g, 1))
    return out


def _endpoint_counters(maps: Mapping[str, Map], gids: list[int]) -> tuple[EndpointCounters, ...]:
    """Traffic and active flows of the endpoints whose counter ids are `gids`, read by runs."""
    stats, conns = maps["ep_stats"], maps["conn_map"]
    ncpu = stats.value_blob_size // 16  # struct counters: 16 bytes, no per-CPU padding
    eps: list[EndpointCounters] = []
    for first, n in _runs(gids):
        # ep_stats: n blobs of ncpu slots of (packets, bytes)
        per = np.frombuffer(stats.lookup_array_range(first, n), dtype="<u8")
        per = per.reshape(n, ncpu, 2).sum(axis=1)
        oc = np.frombuffer(conns.lookup_array_range(first, n), dtype="<u8").reshape(-1, 2)
        eps += [EndpointCounters(packets=int(per[i, 0]), bytes=int(per[i, 1]),
                                 active_flows=max(0, int(oc[i, 0]) - int(oc[i, 1])))
                for i in range(n)]
    return tuple(eps)


def service_counters(maps: Mapping[str, Map], dp: int, gids: list[int]) -> ServiceCounters:
    """Traffic and active flows of service `dp`, whose endpoint indexes have counter ids
    `gids` (in index order)."""
    eps = _endpoint_counters(maps, gids)
    new = sum(int.from_bytes(r[:8], "little")
              for r in maps["svc_new"].lookup_percpu(_u32(dp)) or [])
    return ServiceCounters(packets=sum(e.packets for e in eps), bytes=sum(e.bytes for e in eps),
                           new_flows=new, endpoints=eps)


def services_counters(maps: Mapping[str, Map],
                      services: Mapping[int, list[int]]) -> dict[int, ServiceCounters]:
    """service_counters of many services at once (`services`: dp id -> counter ids of its
    endpoints): each run of consecutive counter ids is one batch call per map, and svc_new is
    read once over the ids in use. The per-CPU slots are summed here, never touched by the
    packet path's CPUs beyond their own increments."""
    if not services:
        return {}
    new_map = maps["svc_new"]
    lo, hi = min(services), max(services)
    new_raw = np.frombuffer(new_map.lookup_array_range(lo, hi - lo + 1), dtype="<u8")
    new_slot = new_map.value_blob_size // 8
    new_per = new_raw.reshape(-1, new_slot).sum(axis=1) if len(new_raw) else new_raw
    out: dict[int, ServiceCounters] = {}
    for dp, gids in services.items():
        eps = _endpoint_counters(maps, gids)
        i = dp - lo
        out[dp] = ServiceCounters(
            packets=sum(e.packets for e in eps), bytes=sum(e.bytes for e in eps),
            new_flows=int(new_per[i]) if i < len(new_per) else 0, endpoints=eps)
    return out


def datapath_stats(stats_map: Map) -> dict[str, int]:
    """Event counters of the datapath (new flows, drops by reason, ...), summed over CPUs."""
    out = {}
    for i, name in enumerate(L.STAT_NAMES):
        vals = stats_map.lookup_percpu(_u32(i)) or []
        out[name] = sum(int.from_bytes(v[:8], "little") for v in vals)
    return out


def zero_gids(maps: Mapping[str, Map], gids: Iterable[int]) -> None:
    """Zero the traffic and connection counters of endpoint counter ids `gids`."""
    keys = [_u32(g) for g in gids]
    if not keys:
        return
    maps["ep_stats"].update_batch(keys, [bytes(maps["ep_stats"].value_blob_size)] * len(keys))
    maps["conn_map"].update_batch(keys, [bytes(16)] * len(keys))
