"""XDP: attach, query and detach a program in native (driver) or generic (skb) mode."""

from __future__ import annotations

import ctypes

from .errors import capturing, check
from .ffi import bpf_xdp_attach, bpf_xdp_detach, bpf_xdp_query_id, c_uint32

# XDP_FLAGS_* (linux/if_link.h)
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}


def xdp_attach(ifindex: int, prog_fd: int, mode: str) -> None:
    """Attach *prog_fd* to *ifindex* in *mode* ("native" or "generic"), replacing the
    program attached in that mode (a restarted daemon swaps it atomically)."""
    with capturing() as lines:
        check(bpf_xdp_attach(ifindex, prog_fd, XDP_MODES[mode], None),
              f"bpf_xdp_attach(ifindex {ifindex}, prog fd {prog_fd}, {mode})", lines)


def xdp_detach(ifindex: int, mode: str) -> None:
    """Remove the XDP program attached to *ifindex* in *mode* (none there: fine)."""
    with capturing() as lines:
        check(bpf_xdp_detach(ifindex, XDP_MODES[mode], None),
              f"bpf_xdp_detach(ifindex {ifindex}, {mode})", lines)


def xdp_attached_prog_id(ifindex: int, mode: str) -> int | None:
    """Id of the program attached to *ifindex* in *mode*, None if none."""
    pid = c_uint32(0)
    with capturing() as lines:
        check(bpf_xdp_query_id(ifindex, XDP_MODES[mode], ctypes.byref(pid)),
              f"bpf_xdp_query_id(ifindex {ifindex}, {mode})", lines)
    return int(pid.value) or None
