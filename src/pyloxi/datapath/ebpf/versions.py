"""A service as the datapath reads it: one version (struct svc_cfg, with its endpoints and slot
table in ep_pool and slot_pool) built from its ServiceProgram, and which endpoint indexes a new
version hands to another endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyloxi.datapath.ebpf import layout as L
from pyloxi.engine.program import EndpointSlot, ServiceProgram


@dataclass(slots=True)
class Version:
    """What one version writes: its config (pool bases filled in by the backend), endpoint i
    at ep_pool[cfg.ep_base + i], slot j at slot_pool[cfg.slot_base + j // SLOT_CHUNK]."""

    cfg: L.SvcCfg
    eps: list[L.EpVal]
    slots: tuple[int, ...]

    @property
    def n_chunks(self) -> int:
        return -(-len(self.slots) // L.SLOT_CHUNK)

    def chunks(self) -> list[bytes]:
        """The slot table as slot_pool elements (the last one padded with zeros)."""
        out = []
        for c in range(self.n_chunks):
            part = self.slots[c * L.SLOT_CHUNK:(c + 1) * L.SLOT_CHUNK]
            chunk = L.SlotChunk()
            chunk.idx[:len(part)] = part
            out.append(bytes(chunk))
        return out


def ep_val(e: EndpointSlot) -> L.EpVal:
    return L.EpVal(ip=L.pl_addr(e.ip), snat_ip=L.pl_addr(e.snat_ip), port=L.port_n(e.port),
                   flags=L.EP_F_ACTIVE if e.active else 0, weight=min(e.weight, 255),
                   family=L.family(e.ip))


def build_version(prog: ServiceProgram, live: Sequence[L.EpVal] | None) -> Version:
    """The version of `prog`, to replace the version whose endpoints are `live` (None: a
    service new to the maps). Counter ids (EpVal.gid) and pool bases are the backend's."""
    if len(prog.slots) > L.MAX_SLOTS or len(prog.endpoints) > L.MAX_EPS:
        raise ValueError(f"service {prog.name}: {len(prog.endpoints)} endpoints, "
                         f"{len(prog.slots)} slots (at most {L.MAX_EPS}, {L.MAX_SLOTS})")
    cfg = L.SvcCfg(
        vip=L.pl_addr(prog.vip), family=L.family(prog.vip), idle_timeout=prog.idle_timeout,
        persist_timeout=prog.persist_timeout, n_slots=len(prog.slots), mode=int(prog.mode),
        sel=int(prog.sel), flags=L.SVC_F_ALLOWLIST if prog.allowed_sources else 0,
        port_base=prog.port_min)
    eps = [ep_val(e) for e in prog.endpoints]
    # Indexes past the program's endpoints stay inactive holes with their last endpoint's
    # address, so a later endpoint taking the index is seen as a new one (reused_slots).
    for was in (live or [])[len(eps):]:
        eps.append(L.EpVal(ip=was.ip, port=was.port, family=was.family))
    cfg.n_eps = len(eps)
    return Version(cfg=cfg, eps=eps, slots=tuple(prog.slots))


def reused_slots(live: Sequence[L.EpVal], prog: ServiceProgram) -> set[int]:
    """Indexes whose endpoint in `prog` is another than the one the live version has."""
    out = set()
    for i, e in enumerate(prog.endpoints[: len(live)]):
        was = live[i]
        was_ip = bytes(was.ip)
        if was_ip != L.ADDR_ZERO and (was_ip, was.port) != (L.addr(e.ip)[0], L.port_n(e.port)):
            out.add(i)
    return out
