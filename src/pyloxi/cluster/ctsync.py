"""Conntrack sync between cluster nodes: the MASTER streams its flows to its peers, so a BACKUP
that takes over forwards the established connections instead of resetting them.

Event-driven: the datapath reports each flow's creation (best effort: only while the ring has
room to spare), its establishment and its deletion through a ring buffer
(bpf/include/pyloxi/ctsync.h); this loop drains it every `batch_ms` (≤ 50 ms) and sends
the batch over TCP (port 22222, loxilb's) to every peer. A peer gets a full resync (every
established flow) when its connection comes up and every `resync_s` after that: it heals
events the ring dropped when full (stats_map `sync_drop`) and refreshes the peer's copies.
Everything on the wire names services and endpoints by identity (VIP/port/proto, endpoint
ip:port), never by node-local ids; the receiving datapath maps them to its own (see
pyloxi.datapath.ebpf.ctsync).

Roles: only a MASTER sends flows (the BACKUP drains its ring all the same, so it is not stale
when it takes over); every node receives. `set_role` is what the HA state machine calls.

Control frames (pyloxi.cluster.peers): with `peers=ClusterPeers(...)` every node, whatever its
role, connects to every peer and sends a small JSON frame about once a second and on change;
a peer silent for 3 s counts as gone.

Wire format, one frame per batch: u32 length of what follows, u64 the sender's
CLOCK_MONOTONIC (its entries' time stamps are on that clock), u16 record size, then records
(struct ct_sync_ev, so both nodes must run the same datapath layout; a different record size
is refused, as loxilb refuses a different binary). A record size of 0 marks a control frame:
the body is JSON (older receivers refuse such a frame and drop the connection; flow frames are
unchanged).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Protocol

from pyloxi.cluster.peers import MAX_PAYLOAD as MAX_CONTROL
from pyloxi.cluster.peers import ClusterPeers

log = logging.getLogger(__name__)

DEFAULT_PORT = 22222
_HDR = struct.Struct(">IQH")  # length after the u32, sender now, record size
_MAX_FRAME = 64 << 20
_CONTROL = 0  # record size of a control frame (JSON body)
CONNECT_TIMEOUT_S = 0.5
RETRY_MAX_S = 5.0
MAX_QUEUED = 256 << 20  # bytes still waiting for one peer: reconnect (and resync in full)


class FlowSyncBackend(Protocol):
    """What the datapath offers conntrack sync (pyloxi.datapath.ebpf.ctsync.FlowSync)."""

    record_size: int

    def events(self) -> list[bytes]: ...

    def dump(self) -> list[bytes]: ...

    def apply(self, records: list[bytes], sender_now_ns: int) -> Counter[str]: ...


def _addr(text: str, default_port: int) -> tuple[str, int]:
    """"host", "host:port" or "[v6]:port" -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


class _Peer:
    """One peer's outgoing stream: frames queued by the tick, sent by the peer's own thread,
    so a dead or slow peer (a blocked send, a connect that times out) never delays the
    others."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.sock: socket.socket | None = None
        self.connected = False
        self.next_try = 0.0
        self.backoff = 0.0
        self.last_full = 0.0
        self.queue: deque[tuple[bytes, int]] = deque()  # (frame, records in it)
        self.queued = 0  # bytes
        self.lock = threading.Lock()
        self.wake = threading.Event()

    def put(self, frames: list[tuple[bytes, int]]) -> bool:
        """Queue one batch (all of it: a full resync may be big); False, nothing queued, when
        the peer has not taken the earlier ones (over MAX_QUEUED bytes still waiting)."""
        with self.lock:
            if self.queued > MAX_QUEUED:
                return False
            self.queue.extend(frames)
            self.queued += sum(len(f) for f, _ in frames)
        self.wake.set()
        return True

    def take(self) -> tuple[bytes, int] | None:
        with self.lock:
            if not self.queue:
                return None
            frame, n = self.queue.popleft()
            self.queued -= len(frame)
            return frame, n

    def clear(self) -> None:
        with self.lock:
            self.queue.clear()
            self.queued = 0


class CtSync:
    """The sync loop of one node. Thread-based: a tick every `batch_ms` drains the ring and
    queues frames, one thread per peer connects and sends, one thread accepts peers, one
    thread reads each peer's stream."""

    def __init__(self, backend: FlowSyncBackend, *, port: int = DEFAULT_PORT,
                 batch_ms: int = 50, resync_s: float = 30.0,
                 peers: ClusterPeers | None = None) -> None:
        self.backend = backend
        self.peers = peers
        self.port = port
        self.batch_s = min(batch_ms, 50) / 1000
        self.resync_s = resync_s
        self.role = "BACKUP"
        self.sent = 0          # records sent (all peers)
        self.received = 0      # records received
        self.applied: Counter[str] = Counter()
        self._peers: list[_Peer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()  # backend calls from the reader threads
        self._count_lock = threading.Lock()

    # --- API for the daemon / HA state ---

    def start(self, peers: Sequence[str], self_index: int, role: str = "BACKUP") -> None:
        """*peers*: every node of the cluster ("ip" or "ip:port"), this one at *self_index*:
        it listens on its own entry and streams to the others."""
        self.role = role.upper()
        host, port = _addr(peers[self_index], self.port)
        self._peers = [_Peer(_addr(p, self.port)) for i, p in enumerate(peers) if i != self_index]
        ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, port))
        ls.listen(8)
        ls.settimeout(0.2)
        self._listener = ls
        for fn in (self._accept_loop, self._send_loop):
            t = threading.Thread(target=fn, name=f"ctsync-{fn.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        for p in self._peers:
            t = threading.Thread(target=self._peer_loop, args=(p,), daemon=True,
                                 name=f"ctsync-peer-{p.addr[0]}")
            t.start()
            self._threads.append(t)
        log.info("conntrack sync on %s:%d, peers %s, %s", host, port,
                 [p.addr for p in self._peers], self.role)

    def set_role(self, role: str) -> None:
        """MASTER sends, BACKUP only receives. Becoming MASTER resyncs every peer in full."""
        role = role.upper()
        if role not in ("MASTER", "BACKUP"):
            raise ValueError(f"role {role!r}")
        if role == "MASTER" and self.role != "MASTER":
            for p in self._peers:
                p.last_full = 0.0
        self.role = role

    def stop(self) -> None:
        self._stop.set()
        for p in self._peers:
            p.wake.set()
        for t in self._threads:
            t.join(timeout=2)
        if self._listener is not None:
            self._listener.close()
        for p in self._peers:
            self._drop(p)

    # --- sender ---

    def _send_loop(self) -> None:
        while not self._stop.wait(self.batch_s):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the loop must survive a bad tick
                log.exception("conntrack sync tick")

    def _wants_connection(self) -> bool:
        # flows go only from a MASTER; control frames from every role
        return self.role == "MASTER" or self.peers is not None

    def _tick(self) -> None:
        with self._lock:
            events = self.backend.events()  # drained in every role: never stale, never full
        control = None
        if self.peers is not None:
            self.peers.expire()
            if self.peers.due():
                control = self.peers.frame()
        master = self.role == "MASTER"
        if not master and control is None:
            return
        now = time.monotonic()
        for p in self._peers:
            if not p.connected:
                p.wake.set()  # its thread (re)connects; a fresh connection gets everything
                continue
            if control is not None:
                self._queue(p, [control], _CONTROL)
            if not master:
                continue
            records = events
            if now - p.last_full >= self.resync_s:
                with self._lock:
                    records = self.backend.dump() + events
                p.last_full = now
            if records:
                self._queue(p, records, len(records[0]))

    def _queue(self, p: _Peer, records: list[bytes], size: int) -> None:
        """Frames of *records* (size 0: one control body) onto the peer's queue."""
        step = 1 if size == _CONTROL else 8192
        frames = []
        for start in range(0, len(records), step):
            chunk = records[start:start + step]
            body = b"".join(chunk)
            frame = _HDR.pack(len(body) + _HDR.size - 4, time.monotonic_ns(), size) + body
            frames.append((frame, 0 if size == _CONTROL else len(chunk)))
        if not p.put(frames):
            log.warning("conntrack sync: peer %s too slow (over %d MiB waiting): reconnecting",
                        p.addr, MAX_QUEUED >> 20)
            self._drop(p)

    def _peer_loop(self, p: _Peer) -> None:
        while not self._stop.is_set():
            p.wake.wait(0.2)
            p.wake.clear()
            if self._stop.is_set():
                break
            if not p.connected:
                if self._wants_connection():
                    self._connect(p, time.monotonic())
                continue
            while (item := p.take()) is not None:
                frame, n = item
                try:
                    assert p.sock is not None
                    p.sock.sendall(frame)
                except (OSError, AssertionError) as exc:
                    log.info("conntrack sync: peer %s lost (%s)", p.addr, exc)
                    self._drop(p)
                    break
                with self._count_lock:
                    self.sent += n

    def _connect(self, p: _Peer, now: float) -> bool:
        if now < p.next_try:
            return False
        try:
            # short: a dead peer must not keep this peer's queue waiting long
            s = socket.create_connection(p.addr, timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            p.backoff = min(max(p.backoff * 2, 1.0), RETRY_MAX_S)
            p.next_try = now + p.backoff
            log.debug("ctsync peer %s: %s", p.addr, exc)
            return False
        p.backoff = 0.0
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5.0)
        p.sock = s
        p.clear()
        p.last_full = 0.0  # a fresh connection gets everything
        p.connected = True
        log.info("conntrack sync: connected to %s", p.addr)
        return True

    @staticmethod
    def _drop(p: _Peer) -> None:
        p.connected = False
        sock, p.sock = p.sock, None
        if sock is not None:
            sock.close()
        p.clear()

    # --- receiver ---

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._read_loop, args=(conn, addr), daemon=True,
                                 name="ctsync-reader")
            t.start()

    def _read_loop(self, conn: socket.socket, addr: object) -> None:
        conn.settimeout(0.5)
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(1 << 20)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= _HDR.size:
                    length, sender_now, size = _HDR.unpack_from(buf)
                    if length > _MAX_FRAME or length < _HDR.size - 4:
                        log.warning("conntrack sync: bad frame from %s", addr)
                        return
                    if len(buf) < 4 + length:
                        break
                    body, buf = buf[_HDR.size:4 + length], buf[4 + length:]
                    if size == _CONTROL:
                        if self.peers is not None and len(body) <= MAX_CONTROL:
                            self.peers.on_frame(body, addr)
                        continue
                    self._receive(body, sender_now, size, addr)

    def _receive(self, body: bytes, sender_now: int, size: int, addr: object) -> None:
        if size != self.backend.record_size:
            log.warning("conntrack sync: %s sends %d-byte records, this datapath's are %d: "
                        "ignored (run the same pyloxi version on every node)", addr, size,
                        self.backend.record_size)
            return
        records = [body[i:i + size] for i in range(0, len(body), size)]
        self.received += len(records)
        try:
            with self._lock:
                done = self.backend.apply(records, sender_now)
        except Exception:  # noqa: BLE001 - one bad batch must not end the stream
            log.exception("conntrack sync: applying %d records from %s", len(records), addr)
            return
        self.applied.update(done)
