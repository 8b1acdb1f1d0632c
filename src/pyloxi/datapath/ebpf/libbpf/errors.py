"""Errors of libbpf and the kernel, and libbpf's own messages.

libbpf >= 1.0 returns ``-errno`` from functions returning ``int`` (including the ``bpf_*`` syscall
wrappers of ``bpf.h``) and ``NULL`` with ``errno`` set from functions returning pointers. Every
failure becomes a :class:`BpfError` whose message carries the operation, the kernel's
``strerror`` text and the warnings libbpf printed during the call (for a failed load, the tail
of the verifier log). libbpf's messages go to the ``pyloxi.datapath.ebpf.libbpf`` logger.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import logging
import os
import platform
import threading
from collections.abc import Iterator

from .ffi import PRINT_FN, libbpf_set_print, libbpf_strerror, vsnprintf

# The package's name, not this module's: where libbpf's messages have always been logged.
log = logging.getLogger("pyloxi.datapath.ebpf.libbpf")

ENOTSUPP = 524  # kernel-internal "operation not supported", leaks out of the bpf() syscall
_LIBBPF_ERRNO_START = 4000  # enum libbpf_errno: LIBBPF_ERRNO__START


class BpfError(OSError):
    """A libbpf or kernel failure: ``errno`` is the error number, ``strerror`` the full message."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(errno, message)

    def __str__(self) -> str:
        err = self.errno or 0  # always set by __init__; OSError types it as optional
        if err == ENOTSUPP:
            name = "ENOTSUPP"
        elif err >= _LIBBPF_ERRNO_START:
            name = f"LIBBPF_ERRNO {err}"
        else:
            name = _errno.errorcode.get(err, str(err))
        return f"[{name}] {self.strerror}"



# --- libbpf print callback → logging, with per-thread capture of warnings for error messages ---

_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # LIBBPF_WARN, _INFO, _DEBUG
# x86-64 SysV and AArch64 pass va_list as a pointer to a small struct; copying that struct is what
# va_copy() does, which lets us measure the formatted length before formatting.
_VA_LIST_SIZE = {"x86_64": 24, "AMD64": 24, "aarch64": 32, "arm64": 32}.get(platform.machine())
_FALLBACK_BUF = 64 * 1024
_MAX_CAPTURE = 6000  # characters of libbpf warnings kept in a BpfError message
_tls = threading.local()


def _format(fmt: bytes, va_list: int) -> str:
    if _VA_LIST_SIZE is not None:
        copy = ctypes.create_string_buffer(_VA_LIST_SIZE)
        ctypes.memmove(copy, va_list, _VA_LIST_SIZE)
        size = vsnprintf(None, 0, fmt, ctypes.addressof(copy)) + 1
    else:
        size = _FALLBACK_BUF
    buf = ctypes.create_string_buffer(max(size, 1))
    vsnprintf(buf, len(buf), fmt, va_list)
    return buf.value.decode(errors="replace")


class Capture(list[str]):
    """libbpf warnings printed by one thread during one call. They are logged when the call
    ends: at WARNING if it succeeded, at DEBUG if it raised (the text is then in the BpfError) or
    if the caller marked the failure as expected (e.g. EEXIST from ``bpf_tc_hook_create``)."""

    expected = False


def _print_cb(level: int, fmt: bytes | None, va_list: int | None) -> int:
    try:
        pylevel = _LEVELS[level] if 0 <= level < len(_LEVELS) else logging.DEBUG
        capture: Capture | None = getattr(_tls, "capture", None)
        want_capture = capture is not None and pylevel >= logging.WARNING
        if fmt is None or not (want_capture or log.isEnabledFor(pylevel)):
            return 0
        text = _format(fmt, va_list or 0).rstrip("\n")
        if want_capture and capture is not None:
            capture.append(text)
        else:
            log.log(pylevel, "%s", text)
    except Exception:  # never let an exception cross back into C
        log.exception("libbpf print callback failed")
    return 0


_print_cb_ref = PRINT_FN(_print_cb)  # module-level reference: must outlive every libbpf call
libbpf_set_print(_print_cb_ref)


@contextlib.contextmanager
def capturing() -> Iterator[Capture]:
    """Collect the libbpf warnings printed by this thread while the block runs."""
    prev = getattr(_tls, "capture", None)
    lines = Capture()
    _tls.capture = lines
    failed = True
    try:
        yield lines
        failed = False
    finally:
        _tls.capture = prev
        level = logging.DEBUG if failed or lines.expected else logging.WARNING
        for line in lines:
            log.log(level, "%s", line)


def error(err: int, what: str, libbpf_lines: list[str] | None = None) -> BpfError:
    err = abs(err) or _errno.EIO
    if err == ENOTSUPP:
        reason = "Operation not supported (ENOTSUPP)"
    elif err >= _LIBBPF_ERRNO_START:  # libbpf's own codes (LIBBPF_ERRNO__FORMAT, ...)
        buf = ctypes.create_string_buffer(256)
        libbpf_strerror(err, buf, len(buf))
        reason = buf.value.decode(errors="replace")
    else:
        reason = os.strerror(err)
    msg = f"{what}: {reason}"
    if libbpf_lines:
        detail = "\n".join(libbpf_lines)
        if len(detail) > _MAX_CAPTURE:
            detail = "…" + detail[-_MAX_CAPTURE:]
        msg += "\n" + detail
    return BpfError(err, msg)


def check(ret: int, what: str, lines: list[str] | None = None) -> int:
    if ret < 0:
        raise error(-ret, what, lines)
    return ret


def errno_now() -> int:
    return ctypes.get_errno() or _errno.EIO

