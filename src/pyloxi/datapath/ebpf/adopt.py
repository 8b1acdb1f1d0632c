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


class PinnedLayoutMismatch(RuntimeError):
    """Maps pinned by an earlier daemon have another layout (an upgrade that changed a map key
    or value, e.g. the dual-family keys) or another size (a changed --conntrack-entries) than
    this datapath needs: they can be neither reused (the program would misread every entry) nor
    silently replaced (that drops every flow). The operator decides."""


# Maps that hold no flow state and that the control plane fills again at every start: a pin of
# an earlier layout is replaced, not an error (xdp_ports: a hash before it became an array).
REFILLED = frozenset({"xdp_ports"})


def _pinned_spec(path: str) -> tuple[int, int, int, int, int]:
    """(type, key size, value size, flags, max entries) of the map pinned at *path*, as
    BpfObject.map_spec gives them for a map of the object."""
    pinned = Map.from_pin(path)
    try:
        return (pinned.map_type, pinned.key_size, pinned.value_size, pinned.map_flags,
                pinned.max_entries)
    finally:
        pinned.close()


def keep_pinned_sizes(obj: BpfObject, names: Sequence[str]) -> None:
    """Before load, for maps whose size nobody asked for: a pinned map that differs from what
    *obj* would create only in its number of entries keeps its size (and its flows). An
    upgrade that changed a compiled size (ct_map: 524,288 -> 2,097,152 entries) then restarts
    with the old table instead of refusing to start; resizing is explicit: --conntrack-entries
    N, which still needs the pins removed."""
    for name in names:
        path = obj.pin_path(name) or ""
        if not os.path.exists(path):
            continue
        try:
            have = _pinned_spec(path)
        except BpfError:
            continue  # check_pins names it
        want = obj.map_spec(name)
        if have[:4] == want[:4] and have[4] != want[4]:
            log.warning("%s pinned at %s has %d entries, this version's default is %d: "
                        "keeping %d (and its flows); to resize, start with the size wanted "
                        "after removing the pins", name, path, have[4], want[4], have[4])
            obj.set_max_entries(name, have[4])


def check_pins(obj: BpfObject, pin_dir: str) -> None:
    """Before load: every map pinned under *pin_dir* must be what *obj* would create, or
    libbpf refuses it with a bare EINVAL. Raises PinnedLayoutMismatch naming the maps, the
    pin directory and the way out (REFILLED maps: the old pin is removed)."""
    bad = []
    for name in obj.pinned_map_names():
        path = obj.pin_path(name) or ""
        if not os.path.exists(path):
            continue
        try:
            have = _pinned_spec(path)
        except BpfError as exc:
            bad.append(f"{name}: cannot be opened ({exc})")
            continue
        want = obj.map_spec(name)
        if have != want and name in REFILLED:
            log.info("map %s: pinned with another layout %s, replaced", name, have)
            os.unlink(path)
            continue
        if have[:4] != want[:4]:
            bad.append(f"{name}: key {have[1]} / value {have[2]} bytes (type {have[0]}), "
                       f"this version needs key {want[1]} / value {want[2]} (type {want[0]})")
        elif have[4] != want[4]:
            bad.append(f"{name}: {have[4]} entries, this daemon is configured for {want[4]}")
    if bad:
        raise PinnedLayoutMismatch(
            f"the maps pinned under {pin_dir} do not fit this datapath: {'; '.join(bad)}. "
            f"They were made by another pyloxi version (or with other table sizes) and their "
            f"flows cannot be carried over. To start anyway, stop every pyloxi daemon using "
            f"them, remove the pins (`rm -r {pin_dir}`; the flows through this node are "
            f"dropped, clients reconnect) and start again; or start with the table sizes the "
            f"pinned maps have.")


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
