"""A service as the datapath reads it: one version (struct svc_ver) built from its
ServiceProgram, and which endpoint indexes a new version hands to another endpoint."""

from __future__ import annotations

import ctypes

from pyloxi.datapath.ebpf import layout as L
from pyloxi.engine.program import EndpointSlot, ServiceProgram


def ep_val(e: EndpointSlot) -> L.EpVal:
    return L.EpVal(ip=L.pl_addr(e.ip), snat_ip=L.pl_addr(e.snat_ip), port=L.port_n(e.port),
                   flags=L.EP_F_ACTIVE if e.active else 0, weight=min(e.weight, 255),
                   family=L.family(e.ip))


def build_version(prog: ServiceProgram, live: L.SvcVer | None) -> L.SvcVer:
    """The version of `prog`, to replace `live` (None: a service new to the maps)."""
    v = L.SvcVer()
    n = min(len(prog.slots), L.SLOTS)
    v.cfg = L.SvcCfg(
        vip=L.pl_addr(prog.vip), family=L.family(prog.vip), idle_timeout=prog.idle_timeout,
        persist_timeout=prog.persist_timeout, n_slots=n, mode=int(prog.mode),
        sel=int(prog.sel), flags=L.SVC_F_ALLOWLIST if prog.allowed_sources else 0,
        port_base=prog.port_min)
    for i, e in enumerate(prog.endpoints[: L.MAX_EPS]):
        v.ep[i] = ep_val(e)
    # Indexes past the program's endpoints stay inactive holes with their last endpoint's
    # address, so a later endpoint taking the index is seen as a new one (reused_slots).
    for i in range(len(prog.endpoints), L.MAX_EPS if live is not None else 0):
        if live is not None and bytes(live.ep[i].ip) != L.ADDR_ZERO:
            v.ep[i] = L.EpVal(ip=live.ep[i].ip, port=live.ep[i].port, family=live.ep[i].family)
    ctypes.memmove(v.slot, bytes(prog.slots[:n]), n)
    return v


def reused_slots(live: L.SvcVer, prog: ServiceProgram) -> set[int]:
    """Indexes whose endpoint in `prog` is another than the one the live version has."""
    out = set()
    for i, e in enumerate(prog.endpoints[: L.MAX_EPS]):
        was = live.ep[i]
        was_ip = bytes(was.ip)
        if was_ip != L.ADDR_ZERO and (was_ip, was.port) != (L.addr(e.ip)[0], L.port_n(e.port)):
            out.add(i)
    return out
