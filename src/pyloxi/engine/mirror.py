"""The mirror table (loxilb's /config/mirror): validation, slots, and what the datapath holds.
Pure: the datapath is reached through `MirrorDatapath`.

A mirror copies the traffic of a target to a mirror port: an interface the datapath runs on
(attachment 1: every packet entering it) or a load-balancer rule by name (attachment 2: every
packet of its flows, both directions, as received). Mirrors are keyed by their ident (loxilb's
MirrKey); each holds one of MAX_MIRRORS datapath slots (its counters) while it lives. The
datapath gets the whole list on every change (`set_mirrors`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.mirror import MirrorEntry, MirrorGetEntry

log = logging.getLogger("pyloxi.mirror")

MAX_MIRRORS = 32  # PL_MIRR_MAX in bpf/include/pyloxi/maps.h (loxilb's limit)
SPAN, RSPAN, ERSPAN = 0, 1, 2  # mirrorInfo.type
ATTACH_PORT, ATTACH_RULE = 1, 2  # targetObject.attachment


@dataclass(frozen=True, slots=True)
class MirrorProgram:
    """One mirror as the datapath needs it."""

    slot: int  # its counter slot, stable while the mirror lives (0..MAX_MIRRORS-1)
    port: str  # the mirror port: copies leave through it
    vlan: int  # RSPAN: the 802.1Q VLAN id pushed on the copies; 0: SPAN (untagged)
    on_rule: bool  # the target is an LB rule name, else an interface name
    target: str


class MirrorDatapath(Protocol):
    def set_mirrors(self, mirrors: Sequence[MirrorProgram]) -> None: ...
    def mirror_counters(self) -> dict[int, tuple[int, int]]: ...


def _check(entry: MirrorEntry, ports: Collection[str] | None) -> tuple[int, bool]:
    """(vlan, on_rule) of a valid entry; InvalidInput otherwise."""
    info, target = entry.mirror_info, entry.target_object
    if not entry.mirror_ident:
        raise InvalidInput("mirr-info error: mirrorIdent is empty")
    if info.type == ERSPAN:
        raise InvalidInput("mirr-info error: mirror type 2 (ERSPAN) not supported: "
                           "0 (SPAN) or 1 (RSPAN)")
    if not info.port:
        raise InvalidInput("mirr-info error: mirrorInfo.port (the mirror port) is empty")
    vlan = 0
    if info.type == RSPAN:
        # loxilb refuses vlan != 0 for RSPAN (an inverted check); a tag needs a VLAN id
        if not 1 <= info.vlan <= 4094:
            raise InvalidInput(f"mirr-info error: RSPAN needs a vlan in 1..4094, not {info.vlan}")
        vlan = info.vlan
    if target.attachment not in (ATTACH_PORT, ATTACH_RULE):
        raise InvalidInput(f"mirr-attachpoint error: attachment {target.attachment}: "
                           "1 (port) or 2 (load-balancer rule name)")
    if not target.mirr_obj_name:
        raise InvalidInput("mirr-attachpoint error: mirrObjName is empty")
    on_rule = target.attachment == ATTACH_RULE
    if not on_rule:
        if target.mirr_obj_name == info.port:
            raise InvalidInput("mirr-attachpoint error: an interface cannot be mirrored to itself")
        if ports is not None and target.mirr_obj_name not in ports:
            raise InvalidInput(f"mirr-attachpoint error: pyloxi's datapath does not run on "
                               f"{target.mirr_obj_name!r} (not one of the daemon's interfaces): "
                               "its traffic cannot be mirrored")
    return vlan, on_rule


class Mirrors:
    """The mirror table. Thread-safe; every change reaches the datapath, then `save` (the
    whole list), before it returns; a change either refuses is undone (datapath: 400, save:
    500) and the datapath given back the list as it was."""

    def __init__(self, datapath: MirrorDatapath, *, ports: Callable[[], Collection[str]] | None
                 = None, saved: Sequence[MirrorEntry] = (),
                 save: Callable[[list[MirrorEntry]], None] | None = None) -> None:
        """`ports`: the interfaces the datapath runs on (port targets must be one of them);
        None: not checked. `saved`: the mirrors `save` wrote last, installed again (one the
        datapath refuses now, e.g. its mirror port is gone, is logged and left out)."""
        self._dp = datapath
        self._ports = ports
        self._mirrors: dict[str, tuple[MirrorEntry, MirrorProgram]] = {}
        self._lock = threading.Lock()
        self._save: Callable[[list[MirrorEntry]], None] | None = None
        self._restore(saved)
        self._save = save

    def _restore(self, saved: Sequence[MirrorEntry]) -> None:
        for entry in saved:
            try:
                self.add(entry)
            except PyloxiError as exc:
                log.warning("saved mirror %s not restored: %s", entry.mirror_ident, exc.message)
        if not self._mirrors:  # whatever an earlier daemon left in the maps goes
            try:
                self._dp.set_mirrors([])
            except (OSError, ValueError) as exc:
                log.warning("mirrors of an earlier daemon not cleared: %s", exc)

    def _programs(self) -> list[MirrorProgram]:
        return [prog for _e, prog in self._mirrors.values()]

    def _program(self) -> None:
        try:
            self._dp.set_mirrors(self._programs())
        except PyloxiError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"mirror refused by the datapath: {exc}") from exc
        if self._save is not None:
            try:
                self._save([e for e, _p in self._mirrors.values()])
            except OSError as exc:
                raise PyloxiError(500, f"mirrors not saved: {exc}") from exc

    def _change(self, ident: str, new: tuple[MirrorEntry, MirrorProgram] | None) -> None:
        """Put (or delete, new None) `ident`, program; on failure the table and the datapath
        are as before. Lock held."""
        old = self._mirrors.get(ident)
        if new is None:
            del self._mirrors[ident]
        else:
            self._mirrors[ident] = new
        try:
            self._program()
        except Exception:
            if old is None:
                self._mirrors.pop(ident, None)
            else:
                self._mirrors[ident] = old
            try:
                self._dp.set_mirrors(self._programs())
            except Exception:
                log.exception("mirror rollback in the datapath failed")
            raise

    def add(self, entry: MirrorEntry) -> None:
        """loxilb's MirrAdd: an ident with the same mirrorInfo is 409 "mirr-exists error";
        with another mirrorInfo the mirror is replaced."""
        vlan, on_rule = _check(entry, None if self._ports is None else self._ports())
        ident, target = entry.mirror_ident, entry.target_object.mirr_obj_name
        with self._lock:
            old = self._mirrors.get(ident)
            if old is not None and old[0].mirror_info == entry.mirror_info:
                raise Conflict("mirr-exists error")
            for other, (_e, p) in self._mirrors.items():
                if other != ident and p.on_rule == on_rule and p.target == target:
                    raise Conflict(f"mirr-exists error: {target!r} is mirrored by {other!r}")
            if old is not None:
                slot = old[1].slot
            else:
                used = {p.slot for _e, p in self._mirrors.values()}
                free = next((i for i in range(MAX_MIRRORS) if i not in used), None)
                if free is None:
                    raise CapacityExceeded(f"mirr-alloc error: {MAX_MIRRORS} mirrors at most")
                slot = free
            prog = MirrorProgram(slot=slot, port=entry.mirror_info.port, vlan=vlan,
                                 on_rule=on_rule, target=target)
            self._change(ident, (entry, prog))

    def delete(self, ident: str) -> None:
        with self._lock:
            if ident not in self._mirrors:
                raise NotFound("no such mirror error")
            self._change(ident, None)

    def counters(self) -> list[tuple[str, int, int]]:
        """(ident, packets, bytes) of every mirror, for metrics."""
        with self._lock:
            items = [(ident, p.slot) for ident, (_e, p) in self._mirrors.items()]
            counters = self._dp.mirror_counters()
        return [(ident, *counters.get(slot, (0, 0))) for ident, slot in items]

    def list(self) -> list[MirrorGetEntry]:
        with self._lock:
            items = list(self._mirrors.values())
            counters = self._dp.mirror_counters()
        out = []
        for entry, prog in items:
            pk, by = counters.get(prog.slot, (0, 0))
            out.append(MirrorGetEntry(mirror_ident=entry.mirror_ident,
                                      mirror_info=entry.mirror_info,
                                      target_object=entry.target_object, sync=0,
                                      counter=f"{pk}:{by}"))
        return out
