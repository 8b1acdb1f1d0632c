"""The datapath's counters as the control plane reads and resets them: per endpoint (ep_stats,
per CPU; conn_map), per service (svc_new, per CPU) and its event counters (stats_map)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
