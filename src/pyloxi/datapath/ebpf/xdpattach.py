"""Where and how the XDP fast path (bpf/include/pyloxi/xdp.h) is attached (`--datapath`).

* ``tc`` (the default in this step): TC alone; an XDP program an earlier daemon attached is
  taken off.
* ``xdp``: XDP on every interface, beside TC (which stays attached in every mode: XDP hands it
  everything but established flows' plain packets): native where the driver has it, else
  generic; an interface XDP cannot be attached to is an error.
* ``auto``: native XDP where the driver has it, TC alone elsewhere (logged), veth included.
* ``xdp-native``: native XDP on every interface, veth included, or an error. For a veth, the
  operator vouches that the peer (the other end, usually in another namespace) runs NAPI: GRO
  on (``ethtool -K PEER gro on``) or an XDP program of its own; else frames XDP redirects into
  that veth are dropped (-ENXIO).

Generic, not native, on veth under ``xdp``. Native XDP on veth redirects into a veth only when
the target's peer runs NAPI (an XDP program or GRO on it, in another namespace that is not ours
to configure), else the frames are dropped (-ENXIO); and a redirected frame loses the skb's
checksum state. Generic XDP redirects through the ordinary transmit path and keeps the skb
(../shared/reference/datapath-notes.md §7.8). But generic XDP runs after the skb exists and
copies every cloned skb (each TCP data segment: TCP keeps a clone) before the program sees it:
measured through the lab (`python -m bench.run --only xdp`), iperf3 lost a quarter to a third
of its throughput against TC alone, so ``auto`` leaves veth to TC. ``xdp-native`` runs native
XDP on veth when the operator has made the peers NAPI-capable (docs/benchmarks.md has both).
Packets with partial checksums are TC's in every mode (xdp.h).
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.libbpf.errors import BpfError
from pyloxi.datapath.ebpf.libbpf.info import prog_fd_by_id, prog_info
from pyloxi.datapath.ebpf.libbpf.maps import Map
from pyloxi.datapath.ebpf.libbpf.xdp import xdp_attach, xdp_attached_prog_id, xdp_detach

log = logging.getLogger(__name__)

DATAPATHS = ("tc", "xdp", "auto", "xdp-native")
PROGRAM = "pyloxi_xdp"
_SIOCGIFHWADDR, _SIOCETHTOOL, _ETHTOOL_GDRVINFO = 0x8927, 0x8946, 0x00000003


def if_mac(name: str) -> bytes:
    """The interface's MAC address (in the caller's network namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16s16x", name.encode())
        res = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, req)
    return res[18:24]


def if_driver(name: str) -> str:
    """The interface's driver name (ETHTOOL_GDRVINFO), "" when it has none to tell."""
    info = array.array("B", struct.pack("I", _ETHTOOL_GDRVINFO) + bytes(196))
    addr, _ = info.buffer_info()
    req = struct.pack("16sP", name.encode(), addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), _SIOCETHTOOL, req)
        except OSError:
            return ""
    return bytes(info[4:36]).split(b"\0", 1)[0].decode(errors="replace")


def preferred_mode(name: str) -> str:
    """native, or generic on veth (see the module's text)."""
    return "generic" if if_driver(name) == "veth" else "native"


def _ours(ifindex: int, mode: str) -> bool:
    pid = xdp_attached_prog_id(ifindex, mode)
    if pid is None:
        return False
    fd = prog_fd_by_id(pid)
    try:
        return prog_info(fd).name == PROGRAM
    finally:
        os.close(fd)


class XdpPorts:
    """The interfaces XDP serves: attached programs and the xdp_ports map that enables them."""

    def __init__(self, prog_fd: int, ports: Map) -> None:
        self.prog_fd = prog_fd
        self.ports = ports
        self.modes: dict[int, str] = {}  # ifindex -> native / generic

    def attach(self, name: str, datapath: str) -> str | None:
        """Attach to interface *name* as `--datapath` says; returns the mode, or None (TC
        alone). Raises BpfError for ``xdp`` when no mode works."""
        ifindex = socket.if_nametoindex(name)
        if datapath == "tc":
            self.detach_one(ifindex)
            return None
        if ifindex >= L.XDP_PORTS:   # xdp_ports is indexed by ifindex
            msg = f"xdp not attached to {name}: ifindex {ifindex} >= {L.XDP_PORTS}"
            if datapath in ("xdp", "xdp-native"):
                raise BpfError(errno.ERANGE, msg)
            log.warning("%s: tc only there", msg)
            return None
        first = preferred_mode(name)
        if datapath == "auto":   # generic XDP only costs (module text)
            modes = [] if first == "generic" else ["native"]
        elif datapath == "xdp-native":
            modes = ["native"]
        else:
            modes = [first] if first == "generic" else ["native", "generic"]
        err: BpfError | None = None
        for mode in modes:
            # an earlier program of ours in the other mode goes first: the kernel keeps one
            # mode active at a time (EEXIST)
            other = "generic" if mode == "native" else "native"
            if _ours(ifindex, other):
                xdp_detach(ifindex, other)
            try:
                xdp_attach(ifindex, self.prog_fd, mode)
            except BpfError as exc:
                err = exc
                continue
            self.modes[ifindex] = mode
            # enabled once attached (until then the program passes every frame of it); the
            # mode says where a native port's frames may be redirected to (xdp.h)
            self.ports.update(ifindex.to_bytes(4, "little"), bytes(L.XdpPort(
                mac=(ctypes.c_uint8 * 6)(*if_mac(name)), native=mode == "native", on=1)))
            log.info("xdp fast path on %s (ifindex %d, %s)", name, ifindex, mode)
            return mode
        self.detach_one(ifindex)   # and an earlier daemon's program, if any
        if datapath in ("xdp", "xdp-native"):
            assert err is not None
            raise err
        if err is None:
            log.info("xdp not attached to %s (veth: generic xdp only costs): tc only there",
                     name)
        else:
            log.warning("xdp not attached to %s (%s): tc only there", name, err)
        return None

    def detach_one(self, ifindex: int) -> None:
        """Take our XDP program off *ifindex* (either mode) and disable it there."""
        if ifindex < L.XDP_PORTS:
            self.ports.update(ifindex.to_bytes(4, "little"), bytes(L.XdpPort()))  # off
        for mode in ("native", "generic"):
            try:
                if _ours(ifindex, mode):
                    xdp_detach(ifindex, mode)
            except (BpfError, OSError) as exc:  # interface gone
                log.debug("xdp detach ifindex %d: %s", ifindex, exc)
        self.modes.pop(ifindex, None)

    def detach(self) -> None:
        for ifindex in list(self.modes):
            self.detach_one(ifindex)
