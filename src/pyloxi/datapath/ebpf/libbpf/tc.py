"""TC clsact: attach, query and detach direct-action cls_bpf filters."""

from __future__ import annotations

import ctypes
import errno as _errno

from .errors import capturing, check, error
from .ffi import (
    TcHook,
    TcOpts,
    bpf_tc_attach,
    bpf_tc_detach,
    bpf_tc_hook_create,
    bpf_tc_hook_destroy,
    bpf_tc_query,
)

# enum bpf_tc_attach_point / enum bpf_tc_flags (libbpf.h)
BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1
BPF_TC_CUSTOM = 1 << 2
BPF_TC_F_REPLACE = 1 << 0


def _hook(ifindex: int, ingress: bool) -> TcHook:
    return TcHook(
        sz=ctypes.sizeof(TcHook),
        ifindex=ifindex,
        attach_point=BPF_TC_INGRESS if ingress else BPF_TC_EGRESS,
    )


def _where(ifindex: int, ingress: bool, handle: int, priority: int) -> str:
    return f"ifindex {ifindex} {'ingress' if ingress else 'egress'} handle {handle} prio {priority}"


def tc_attach(
    ifindex: int, prog_fd: int, *, ingress: bool = True, handle: int = 1, priority: int = 1
) -> int:
    """Attach *prog_fd* as a direct-action cls_bpf filter on the clsact hook of *ifindex*.

    Creates the clsact qdisc if needed (EEXIST is fine) and uses ``BPF_TC_F_REPLACE``, so
    attaching another program at the same handle/priority swaps it atomically. Returns the
    attached program id.
    """
    hook = _hook(ifindex, ingress)
    where = _where(ifindex, ingress, handle, priority)
    with capturing() as lines:
        ret = bpf_tc_hook_create(ctypes.byref(hook))
        if ret < 0 and ret != -_errno.EEXIST:
            raise error(-ret, f"bpf_tc_hook_create({where})", lines)
        lines.expected = ret == -_errno.EEXIST  # clsact already there: fine
    opts = TcOpts(
        sz=ctypes.sizeof(TcOpts),
        prog_fd=prog_fd,
        flags=BPF_TC_F_REPLACE,
        handle=handle,
        priority=priority,
    )
    with capturing() as lines:
        ret = bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
        check(ret, f"bpf_tc_attach({where}, prog fd {prog_fd})", lines)
    return int(opts.prog_id)


def tc_detach(ifindex: int, *, ingress: bool = True, handle: int = 1, priority: int = 1) -> None:
    """Remove the filter at *handle*/*priority* (ENOENT if there is none). Keeps the qdisc."""
    hook = _hook(ifindex, ingress)
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=priority)
    where = _where(ifindex, ingress, handle, priority)
    with capturing() as lines:
        check(
            bpf_tc_detach(ctypes.byref(hook), ctypes.byref(opts)), f"bpf_tc_detach({where})", lines
        )


def tc_attached_prog_id(
    ifindex: int, *, ingress: bool = True, handle: int = 1, priority: int = 1
) -> int | None:
    """Id of the program attached at *handle*/*priority* (``bpf_tc_query``), None if none."""
    hook = _hook(ifindex, ingress)
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=priority)
    where = _where(ifindex, ingress, handle, priority)
    with capturing() as lines:
        ret = bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts))
        # ENOENT: no such filter; EINVAL: no clsact qdisc on the device at all
        if ret in (-_errno.ENOENT, -_errno.EINVAL):
            lines.expected = True
            return None
        check(ret, f"bpf_tc_query({where})", lines)
    return int(opts.prog_id)


def tc_hook_destroy(ifindex: int) -> None:
    """Delete the clsact qdisc of *ifindex* (and so every tc filter on it).

    Idempotent: a missing qdisc (ENOENT, or EINVAL "Invalid handle" from the kernel) is fine."""
    hook = TcHook(
        sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=BPF_TC_INGRESS | BPF_TC_EGRESS
    )
    with capturing() as lines:
        ret = bpf_tc_hook_destroy(ctypes.byref(hook))
        lines.expected = ret in (-_errno.ENOENT, -_errno.EINVAL)
        if ret < 0 and not lines.expected:
            raise error(-ret, f"bpf_tc_hook_destroy(ifindex {ifindex})", lines)
