"""cluster.ctsync without a datapath: the stream between two nodes over loopback (framing,
roles, full resync on connect, record-size check), with fake backends."""

from __future__ import annotations

import socket
from collections import Counter

from tests.waiting import wait_until

from pyloxi.cluster.ctsync import CtSync


class Fake:
    def __init__(self, size: int = 344, flows: int = 0) -> None:
        self.record_size = size
        self.pending: list[bytes] = []
        self.table = [bytes([i % 256]) * size for i in range(flows)]
        self.got: list[bytes] = []

    def events(self) -> list[bytes]:
        out, self.pending = self.pending, []
        return out

    def dump(self) -> list[bytes]:
        return list(self.table)

    def apply(self, records: list[bytes], sender_now_ns: int) -> Counter[str]:
        assert sender_now_ns > 0
        self.got += records
        return Counter(inserted=len(records))


def _peers() -> list[str]:
    out = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            out.append(f"127.0.0.1:{s.getsockname()[1]}")
    return out


def test_master_streams_resync_then_events() -> None:
    a, b = Fake(flows=20000), Fake()  # a resync bigger than one frame's 8192 records
    peers = _peers()
    sa, sb = CtSync(a), CtSync(b)
    try:
        sb.start(peers, 1, "BACKUP")
        sa.start(peers, 0, "MASTER")
        wait_until(lambda: len(b.got) == 20000, 30)
        assert b.got == a.table
        a.pending = [b"\xee" * 344] * 3
        wait_until(lambda: len(b.got) == 20003, 30)
        assert b.got[-1] == b"\xee" * 344
        assert sb.applied["inserted"] == 20003
        # a BACKUP drains its events but sends nothing
        sa.set_role("BACKUP")
        sent = sa.sent
        a.pending = [b"\x01" * 344]
        wait_until(lambda: not a.pending, 30)
        assert sa.sent == sent
    finally:
        sa.stop()
        sb.stop()


def test_other_record_size_is_refused() -> None:
    a, b = Fake(size=100, flows=5), Fake(size=344)
    peers = _peers()
    sa, sb = CtSync(a), CtSync(b)
    try:
        sb.start(peers, 1, "BACKUP")
        sa.start(peers, 0, "MASTER")
        wait_until(lambda: sb.received == 0 and sa.sent == 5, 30)
        a.pending = [b"\x02" * 100]
        wait_until(lambda: sa.sent == 6, 30)
        assert b.got == [] and sb.received == 0
    finally:
        sa.stop()
        sb.stop()
