"""``BPF_PROG_TEST_RUN``: run a loaded program on a packet (tests, benchmarks) or run a
``SEC("syscall")`` program (the control plane's conditional conntrack deletes)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .errors import capturing, check
from .ffi import TestRunOpts, bpf_prog_test_run_opts, c_void_p


@dataclass(frozen=True)
class TestRunResult:
    """Outcome of ``bpf_prog_test_run_opts``; ``duration_ns`` is the average per repetition."""

    __test__ = False  # not a pytest test class

    retval: int
    data: bytes
    duration_ns: int
    ctx: bytes | None = None


def prog_test_run(
    prog_fd: int,
    data: bytes,
    *,
    repeat: int = 1,
    ctx: bytes | None = None,
    data_size_out: int = 2048,
) -> TestRunResult:
    """Run a program on *data* (``BPF_PROG_TEST_RUN``). TC/XDP need >= 14 bytes (Ethernet).

    *ctx* (e.g. a ``struct __sk_buff`` for TC) is passed in and the program's ctx is returned in
    ``TestRunResult.ctx``. ``data_size_out`` must cover the output packet, else ENOSPC.
    """
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(max(data_size_out, 1))
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts))
    opts.data_in = ctypes.cast(din, c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(dout, c_void_p)
    opts.data_size_out = len(dout)
    opts.repeat = repeat
    cin = cout = None
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        cout = ctypes.create_string_buffer(len(ctx))
        opts.ctx_in = ctypes.cast(cin, c_void_p)
        opts.ctx_size_in = len(ctx)
        opts.ctx_out = ctypes.cast(cout, c_void_p)
        opts.ctx_size_out = len(ctx)
    with capturing() as lines:
        ret = bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
        check(ret, f"bpf_prog_test_run_opts(prog fd {prog_fd}, {len(data)} bytes)", lines)
    out_ctx = cout.raw[: opts.ctx_size_out] if cout is not None else None
    return TestRunResult(
        retval=int(opts.retval),
        data=dout.raw[: opts.data_size_out],
        duration_ns=int(opts.duration),
        ctx=out_ctx,
    )


def run_syscall_prog(prog_fd: int, ctx: bytes | None = None) -> int:
    """Run a ``SEC("syscall")`` program once (test_run with no packet); returns its retval."""
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts))
    cin = None
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        opts.ctx_in = ctypes.cast(cin, c_void_p)
        opts.ctx_size_in = len(ctx)
    with capturing() as lines:
        ret = bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
        check(ret, f"bpf_prog_test_run_opts(syscall prog fd {prog_fd})", lines)
    return int(opts.retval)

