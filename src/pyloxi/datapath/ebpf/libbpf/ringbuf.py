"""A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) drained with libbpf's ``ring_buffer__consume``.

The producers submit with ``BPF_RB_NO_WAKEUP`` (no epoll notification), so the consumer polls
on its own timer: :meth:`RingBuffer.consume` returns every record available now.
"""

from __future__ import annotations

import ctypes

from .errors import BpfError, capturing, check
from .ffi import RINGBUF_SAMPLE_FN, ring_buffer__consume, ring_buffer__free, ring_buffer__new


class RingBuffer:
    """Consumer of one ring buffer map (by fd; the fd must outlive this object)."""

    def __init__(self, map_fd: int) -> None:
        self._batch: list[bytes] = []

        def sample(_ctx: int | None, data: int | None, size: int) -> int:
            self._batch.append(ctypes.string_at(data or 0, size))
            return 0

        self._cb = RINGBUF_SAMPLE_FN(sample)  # kept referenced: libbpf calls it later
        with capturing() as lines:
            ptr = ring_buffer__new(map_fd, self._cb, None, None)
            if not ptr:
                err = ctypes.get_errno()
                check(-err if err else -1, f"ring_buffer__new(map fd {map_fd})", lines)
        self._rb: int | None = ptr

    def consume(self) -> list[bytes]:
        """Every record available now (copied), oldest first."""
        if self._rb is None:
            raise BpfError(9, "ring buffer closed")
        self._batch = []
        ret = ring_buffer__consume(self._rb)
        if ret < 0:
            check(ret, "ring_buffer__consume", [])
        out, self._batch = self._batch, []
        return out

    def close(self) -> None:
        if self._rb is not None:
            ring_buffer__free(self._rb)
            self._rb = None

    def __del__(self) -> None:
        self.close()
