"""Restart without pins: take over the maps of the pyloxi program still attached.

The pins of a daemon run under `ip netns exec` live in its private mount namespace and vanish
with it, while the attached program keeps the maps (and the flows) alive. A new daemon whose
pins are missing adopts those maps instead of starting with empty tables.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

from pyloxi.datapath.ebpf.libbpf.errors import BpfError
from pyloxi.datapath.ebpf.libbpf.info import prog_fd_by_id, prog_info
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.datapath.ebpf.libbpf.objects import BpfObject
from pyloxi.datapath.ebpf.libbpf.tc import tc_attached_prog_id

log = logging.getLogger(__name__)


class DatapathInUse(RuntimeError):
    """A pyloxi datapath is attached and carries flows, but its maps can be neither found
    pinned nor adopted: starting would swap in empty tables and drop every flow."""


def live_program(interfaces: Sequence[str], program: str) -> tuple[str, int] | None:
    """(interface, program id) of the first *program* attached where we will attach."""
    found: tuple[str, int] | None = None
    for name in interfaces:
        try:
            pid = tc_attached_prog_id(socket.if_nametoindex(name), ingress=True)
        except OSError:  # no such interface (yet): nothing attached there
            continue
        if pid is None:
            continue
        try:
            fd = prog_fd_by_id(pid)
        except BpfError as exc:
            raise DatapathInUse(f"a program (id {pid}) is attached to {name} but cannot be "
                                f"inspected ({exc})") from exc
        try:
            info = prog_info(fd)
        finally:
            os.close(fd)
        if info.name != program[:15]:  # kernel names stop at 15 characters
            log.warning("%s carries a foreign tc program %r (id %d); it will be replaced",
                        name, info.name, pid)
            continue
        if found is None:
            found = (name, pid)
        elif found[1] != pid:
            log.warning("%s and %s carry different pyloxi programs (ids %d, %d); adopting "
                        "the maps of the first", found[0], name, found[1], pid)
    return found


def adopt_live_maps(obj: BpfObject, pin_dir: str, interfaces: Sequence[str],
                    program: str) -> list[Map]:
    """Before load: point each map of *obj* whose pin is missing at the live map of the same
    name used by the attached *program*. Returns the adopted maps (the caller closes)."""
    missing = [n for n in obj.pinned_map_names() if not os.path.exists(obj.pin_path(n) or "")]
    if not missing or not interfaces:
        return []
    live = live_program(interfaces, program)
    if live is None:
        return []  # nothing attached: a fresh start
    ifname, pid = live
    how = (f"Start it with `pyloxi daemon --netns NS` rather than under `ip netns exec`, "
           f"so the pins under {pin_dir} outlive the daemon; or, to start with empty "
           f"tables and drop the flows, remove the old datapath first "
           f"(`tc filter del dev {ifname} ingress`).")
    adopted: list[Map] = []
    try:
        fd = prog_fd_by_id(pid)
        try:
            ids = prog_info(fd).map_ids
        finally:
            os.close(fd)
        live_maps = {}
        for map_id in ids:
            m = Map.from_id(map_id)
            live_maps[m.name] = m
        for name in missing:
            reused = live_maps.pop(name[:15], None)
            if reused is None:  # not used by the packet path: holds no flow state
                log.info("map %s: not pinned, not used by the attached program; new", name)
                continue
            obj.reuse_map(name, reused)
            adopted.append(reused)
        for m in live_maps.values():
            m.close()
    except BpfError as exc:
        for m in adopted:
            m.close()
        raise DatapathInUse(
            f"the pyloxi datapath attached to {ifname} (program id {pid}) carries live "
            f"flows, its maps are not pinned under {pin_dir} and cannot be adopted "
            f"({exc}). {how}") from exc
    log.warning("pins were missing under %s: adopted %d maps (%s) of the datapath attached "
                "to %s (program id %d), flows kept; pinning them again", pin_dir,
                len(adopted), ", ".join(m.name for m in adopted), ifname, pid)
    return adopted
