"""Built-in BFD (loxilb's pkg/proto/bfd.go): RFC 5880 asynchronous mode, single hop (RFC 5881),
one session per peer, and the HA election loxilb runs on it.

    --ka REMOTE:SOURCE:INTERVAL_US / POST /config/bfd -> Bfd.add() -> Session (per peer)
    UDP 3784 <-> Session.receive()/packet()   (TTL 255 both ways: RFC 5881 §5)
    Session state change -> Bfd.notify(instance, MASTER|BACKUP|NOT_DEFINED) -> ClusterState

The election is loxilb's: each side's discriminator is its own IPv4 address; when both sides
are Up, the higher discriminator is MASTER and the other BACKUP; when the peer is lost (its
packets stop for the detection time, or it says Down / AdminDown) this node becomes MASTER and
takes the peer's discriminator + 1, so it stays MASTER when the peer comes back (no preemption
flap; the returning node becomes BACKUP).

The state machine and the packet codec are pure (clock passed in) and tested without sockets;
`Bfd` runs them on the daemon's asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import random
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from pyloxi.model.bfd import (
    ADMIN_DOWN,
    BFD_PORT,
    DEFAULT_MULTIPLIER,
    DEFAULT_TX_INTERVAL_US,
    DOWN,
    INIT,
    MIN_TX_INTERVAL_US,
    STATE_NAMES,
    UP,
    BfdEntry,
    BfdGetEntry,
)
from pyloxi.model.cluster import BACKUP, DEFAULT_INSTANCE, MASTER, NOT_DEFINED
from pyloxi.model.errors import Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.store import write_atomic

log = logging.getLogger(__name__)

VERSION = 1
HEADER = struct.Struct("!BBBBIIIII")  # RFC 5880 §4.1, the mandatory section: 24 bytes
TTL = 255  # RFC 5881 §5: sent with 255, anything received with less is discarded
SOURCE_PORTS = (49152, 65535)  # RFC 5881 §4: the source port range
# RFC 5880 §6.8.7: each transmission is jittered 0-25 % early (10 % at most with mult 1)
JITTER = 0.25
# Diagnostic codes (RFC 5880 §4.1)
DIAG_NONE, DIAG_EXPIRED, DIAG_NEIGHBOR_DOWN, DIAG_ADMIN_DOWN = 0, 1, 3, 7
UINT32 = 2**32
RETRY_S = 5.0  # a saved session that could not start (its address not there yet) is retried
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux's value; Python 3.11 lacks the name


# ------------------------------------------------------------------------ packet codec


@dataclass(frozen=True)
class Packet:
    """A BFD Control packet without authentication (RFC 5880 §4.1). Intervals in us."""

    state: int
    my_disc: int
    your_disc: int = 0
    multiplier: int = DEFAULT_MULTIPLIER
    desired_min_tx: int = DEFAULT_TX_INTERVAL_US
    required_min_rx: int = DEFAULT_TX_INTERVAL_US
    required_min_echo_rx: int = 0  # we do not do the echo function
    diag: int = DIAG_NONE
    poll: bool = False
    final: bool = False
    version: int = VERSION
    cpi: bool = False  # Control Plane Independent: no, we live in the control plane
    auth: bool = False
    demand: bool = False
    multipoint: bool = False

    def encode(self) -> bytes:
        flags = ((self.state & 3) << 6 | self.poll << 5 | self.final << 4 | self.cpi << 3
                 | self.auth << 2 | self.demand << 1 | self.multipoint)
        return HEADER.pack((self.version & 7) << 5 | (self.diag & 0x1F), flags, self.multiplier,
                           HEADER.size, self.my_disc, self.your_disc, self.desired_min_tx,
                           self.required_min_rx, self.required_min_echo_rx)


def decode(data: bytes) -> Packet:
    """The packet in `data`, or ValueError naming the RFC 5880 §6.8.6 check it fails."""
    if len(data) < HEADER.size:
        raise ValueError(f"short packet ({len(data)} bytes)")
    vd, flags, mult, length, my, your, tx, rx, echo = HEADER.unpack_from(data)
    version = vd >> 5
    if version != VERSION:
        raise ValueError(f"version {version}")
    auth = bool(flags & 0x04)
    if length < (26 if auth else HEADER.size) or length > len(data):
        raise ValueError(f"length field {length} (payload {len(data)})")
    if mult == 0:
        raise ValueError("detect multiplier 0")
    if flags & 0x01:
        raise ValueError("multipoint bit set")
    if my == 0:
        raise ValueError("my discriminator 0")
    if auth:  # no session of ours asks for authentication (§6.8.6: discard)
        raise ValueError("authentication present")
    return Packet(state=flags >> 6, my_disc=my, your_disc=your, multiplier=mult,
                  desired_min_tx=tx, required_min_rx=rx, required_min_echo_rx=echo,
                  diag=vd & 0x1F, poll=bool(flags & 0x20), final=bool(flags & 0x10),
                  version=version, cpi=bool(flags & 0x08), auth=auth,
                  demand=bool(flags & 0x02), multipoint=False)


def discriminator(ip: str) -> int:
    """loxilb's discriminator: the IPv4 address as a 32-bit number."""
    return int(ipaddress.IPv4Address(ip))


# ------------------------------------------------------------------------ state machine


@dataclass
class Session:
    """One peer's RFC 5880 session state (§6.8.1 variables), and loxilb's election on it.

    `receive` and `expire` return the HA state to apply when the election changed it (else
    None). Times are monotonic seconds from the caller's clock."""

    remote: str
    source: str  # the address we send from; our discriminator
    instance: str = DEFAULT_INSTANCE
    interval_us: int = DEFAULT_TX_INTERVAL_US  # our Desired Min TX and Required Min RX
    multiplier: int = DEFAULT_MULTIPLIER
    state: int = DOWN
    local_disc: int = 0
    remote_disc: int = 0
    remote_state: int = DOWN
    remote_multiplier: int = 0
    remote_min_tx: int = 0
    remote_min_rx: int = 1  # RFC 5880 §6.8.1 initial value
    diag: int = DIAG_NONE
    poll: bool = False  # a Poll sequence is under way (our parameters changed)
    last_rx: float | None = None
    role: str = ""  # the HA state this session last decided ("" none yet)

    def __post_init__(self) -> None:
        if not self.local_disc:
            self.local_disc = discriminator(self.source)

    # -- timers
    def tx_interval_s(self) -> float:
        """RFC 5880 §6.8.7: the larger of our Desired Min TX and the peer's Required Min RX."""
        return max(self.interval_us, self.remote_min_rx) / 1e6

    def detection_time_s(self) -> float:
        """RFC 5880 §6.8.4 (asynchronous mode): the peer's Detect Mult times the larger of our
        Required Min RX and the peer's last Desired Min TX."""
        return self.remote_multiplier * max(self.interval_us, self.remote_min_tx) / 1e6

    def deadline(self) -> float | None:
        """When the session times out if nothing more is heard (None: no timer runs)."""
        if self.state not in (INIT, UP) or self.last_rx is None:
            return None
        return self.last_rx + self.detection_time_s()

    # -- the wire
    def packet(self, *, final: bool = False) -> Packet:
        return Packet(state=self.state, my_disc=self.local_disc, your_disc=self.remote_disc,
                      multiplier=self.multiplier, desired_min_tx=self.interval_us,
                      required_min_rx=self.interval_us, diag=self.diag,
                      poll=self.poll and not final, final=final)

    def receive(self, pkt: Packet, now: float) -> str | None:
        """RFC 5880 §6.8.6 reception, after the packet checks decode() made. Raises
        ValueError when the packet is not for this session (it is then discarded)."""
        if self.state == ADMIN_DOWN:
            raise ValueError("session is AdminDown")
        if pkt.your_disc and pkt.your_disc != self.local_disc:
            raise ValueError(f"your discriminator {pkt.your_disc} is not ours")
        if not pkt.your_disc and pkt.state not in (DOWN, ADMIN_DOWN):
            raise ValueError("your discriminator 0 in state " + STATE_NAMES[pkt.state])
        self.remote_disc = pkt.my_disc
        self.remote_state = pkt.state
        self.remote_multiplier = pkt.multiplier
        self.remote_min_tx = pkt.desired_min_tx
        self.remote_min_rx = pkt.required_min_rx
        self.last_rx = now
        if pkt.final:
            self.poll = False
        before = self.state
        if pkt.state == ADMIN_DOWN:
            if self.state != DOWN:
                self._down(DIAG_NEIGHBOR_DOWN)
        elif self.state == DOWN:
            if pkt.state == DOWN:
                self.state = INIT
            elif pkt.state == INIT:
                self.state = UP
        elif self.state == INIT:
            if pkt.state in (INIT, UP):
                self.state = UP
        elif pkt.state == DOWN:  # we are Up
            self._down(DIAG_NEIGHBOR_DOWN)
        if self.state == UP and self.role == MASTER and before == UP \
                and self.local_disc <= self.remote_disc:
            # loxilb's forced re-election: two MASTERs meeting (e.g. both sides lost each
            # other) settle on the higher discriminator
            return self._elect(UP, DOWN)
        return self._elect(self.state, before)

    def expire(self, now: float) -> str | None:
        """The detection timer (§6.8.4): nothing heard for the detection time -> Down."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        before = self.state
        self._down(DIAG_EXPIRED)
        role = self._elect(self.state, before)
        # §6.8.1: the peer's discriminator is forgotten once a detection time passed in
        # silence; our packets then carry Your Discriminator 0, which a restarted peer accepts
        self.remote_disc = 0
        return role

    def _down(self, diag: int) -> None:
        was_up = self.state == UP
        self.state = DOWN
        self.diag = diag
        self.last_rx = None
        if was_up and self.remote_disc:
            # loxilb: take the peer's discriminator + 1, so this node, now MASTER, stays MASTER
            # when the peer comes back (the peer learns it from our packets)
            self.local_disc = (self.remote_disc + 1) % UINT32 or 1

    def _elect(self, new: int, old: int) -> str | None:
        """loxilb's electLocked: the HA state a session transition decides."""
        if new == old or self.remote_disc == 0:
            return None
        if new == UP:
            self.diag = DIAG_NONE
            role = MASTER if self.local_disc > self.remote_disc else BACKUP
        elif new == DOWN and old == UP:
            role = MASTER
        elif self.remote_disc == self.local_disc:
            role = NOT_DEFINED
        else:
            return None
        self.role = role
        return role

    def update(self, interval_us: int, multiplier: int) -> bool:
        """New parameters (loxicmd `set bfd`): announced with a Poll sequence (§6.8.3)."""
        if (interval_us, multiplier) == (self.interval_us, self.multiplier):
            return False
        self.interval_us, self.multiplier = interval_us, multiplier
        self.poll = self.state == UP
        return True


# ------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class SessionConfig:
    instance: str
    remote: str
    source: str  # as configured: 0.0.0.0 = the address the route to the peer uses
    interval_us: int = DEFAULT_TX_INTERVAL_US
    multiplier: int = DEFAULT_MULTIPLIER
    from_flag: bool = False  # made by --ka (not saved: the flag makes it again)

    def entry(self) -> BfdEntry:
        return BfdEntry(instance=self.instance, remote_ip=self.remote, source_ip=self.source,
                        interval=self.interval_us, retry_count=self.multiplier)


def config_of(entry: BfdEntry) -> SessionConfig:
    """The session a POST body asks for; InvalidInput on bad values (loxilb's checks)."""
    remote = _ipv4(entry.remote_ip, "remoteIp")
    if ipaddress.IPv4Address(remote).is_unspecified or ipaddress.IPv4Address(remote).is_multicast:
        raise InvalidInput(f"invalid remoteIp {remote}: not a unicast address")
    source = _ipv4(entry.source_ip or "0.0.0.0", "sourceIp")
    interval = entry.interval or DEFAULT_TX_INTERVAL_US
    if interval < MIN_TX_INTERVAL_US:
        raise InvalidInput(f"invalid interval {interval}: at least {MIN_TX_INTERVAL_US} us")
    return SessionConfig(instance=entry.instance or DEFAULT_INSTANCE, remote=remote,
                         source=source, interval_us=interval,
                         multiplier=entry.retry_count or DEFAULT_MULTIPLIER)


def parse_ka(text: str) -> SessionConfig:
    """--ka REMOTE:SOURCE:INTERVAL_US (loxilb's flag; the interval may be left out)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--ka {text!r}: RemoteIP:SourceIP:IntervalUs")
    try:
        interval = int(parts[2]) if len(parts) == 3 and parts[2] else 0
        return config_of(BfdEntry(remote_ip=parts[0], source_ip=parts[1], interval=interval))
    except (InvalidInput, ValidationError, ValueError) as exc:
        raise ValueError(f"--ka {text!r}: {getattr(exc, 'message', exc)}") from None


def _ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise InvalidInput(f"invalid {what} {value[:64]!r}: an IPv4 address (loxilb's BFD "
                           "discriminator is the IPv4 address)") from None


def load_configs(path: Path) -> list[SessionConfig] | None:
    """The sessions saved in `path` (None: no file)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("BFD file %s unreadable, ignored: %s", path, exc)
        return None
    out: list[SessionConfig] = []
    items = data.get("Attr") if isinstance(data, dict) else None
    for item in items if isinstance(items, list) else []:
        try:
            out.append(config_of(BfdEntry.model_validate(item)))
        except (ValidationError, PyloxiError) as exc:
            log.warning("BFD file %s: session %r ignored: %s", path, item, exc)
    return out


# ------------------------------------------------------------------------ the runtime


def _route_source(remote: str) -> str:
    """The address this host sends from to reach `remote` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((remote, BFD_PORT))
        return str(s.getsockname()[0])


def _sender(source: str, remote: str, port: int) -> socket.socket:
    """A connected UDP socket from `source` and a port in 49152-65535 (RFC 5881 §4), TTL 255.

    That is the datapath's NAT port range too; no harm: BFD is never answered on this port
    (each side sends to the other's 3784), and a flow NATed to the same port goes elsewhere."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
        sock.setblocking(False)
        for _ in range(64):
            try:
                sock.bind((source, random.randint(*SOURCE_PORTS)))
                break
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:  # not an address of this host
                    raise InvalidInput(f"invalid sourceIp {source}: not an address of this "
                                       "host") from None
        else:
            raise PyloxiError(500, "no free BFD source port")
        sock.connect((remote, port))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Running:
    config: SessionConfig
    session: Session
    sock: socket.socket
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


Notify = Callable[[str, str], None]  # (instance, HA state)


class Bfd:
    """The BFD sessions of this node, on the daemon's asyncio loop. `notify(instance, state)`
    is called (on the loop) when a session's election decides an HA state."""

    def __init__(self, notify: Notify, *, path: Path | None = None, port: int = BFD_PORT,
                 ka: SessionConfig | None = None, clock: Callable[[], float] | None = None
                 ) -> None:
        self.notify = notify
        self.path = path
        self.port = port
        self._clock = clock
        self._sessions: dict[str, _Running] = {}
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.Task[None] | None = None
        # Configured but not running: before start(), or their start failed (e.g. the source
        # address is not configured yet at boot): retried every RETRY_S, listed, and saved.
        self._waiting: dict[str, SessionConfig] = {}
        # loxilb: BFDconfig.txt replaces --ka; here the saved sessions win for their peers
        saved = load_configs(path) if path is not None else None
        for config in saved or []:
            self._waiting[config.remote] = config
        if ka is not None and ka.remote not in self._waiting:
            self._waiting[ka.remote] = replace(ka, from_flag=True)

    def _now(self) -> float:
        assert self._loop is not None
        return self._clock() if self._clock else self._loop.time()

    # -- lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_waiting(first=True)
        self._retry = self._loop.create_task(self._retry_loop())

    def _start_waiting(self, first: bool = False) -> None:
        for remote, config in list(self._waiting.items()):
            try:
                self._start_session(config)
            except PyloxiError as exc:
                if first:
                    log.error("BFD session with %s not started (retried every %.0f s): %s",
                              remote, RETRY_S, exc.message)
                continue
            del self._waiting[remote]

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            if self._waiting:
                self._start_waiting()

    def _listen(self) -> None:
        """UDP 3784 is opened with the first session (a node without BFD holds no port)."""
        if self._listener is not None:
            return
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            sock.setblocking(False)
            sock.bind(("0.0.0.0", self.port))
        except OSError as exc:
            sock.close()
            raise PyloxiError(500, f"BFD cannot listen on UDP {self.port}: {exc}") from None
        self._listener = sock
        self.port = sock.getsockname()[1]  # port 0 (tests): the one the kernel chose
        self._loop.add_reader(sock.fileno(), self._readable)
        log.info("BFD listening on UDP %d", self.port)

    async def stop(self) -> None:
        """Tell each peer AdminDown (it takes over at once) and close."""
        if self._retry is not None:
            self._retry.cancel()
        for remote in list(self._sessions):
            self._end(remote)
        if self._listener is not None and self._loop is not None:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    # -- the API (called on the loop)
    def add(self, entry: BfdEntry) -> None:
        config = config_of(entry)
        running = self._sessions.get(config.remote)
        waiting = self._waiting.get(config.remote)
        if waiting is not None:
            if waiting.instance != config.instance or \
                    (waiting.interval_us, waiting.multiplier) == (config.interval_us,
                                                                  config.multiplier):
                raise Conflict("bfd existing session")
            self._waiting[config.remote] = replace(config, source=waiting.source)
        elif running is not None:
            if running.config.instance != config.instance:
                raise Conflict("bfd existing session")
            s = running.session
            if not s.update(config.interval_us, config.multiplier):
                raise Conflict("bfd existing session")
            running.config = replace(config, source=running.config.source)
            running.wake.set()
            log.info("BFD %s: interval %d us, multiplier %d", config.remote,
                     config.interval_us, config.multiplier)
        elif self._loop is None:
            self._waiting[config.remote] = config
        else:
            self._start_session(config)
        self._save()

    def delete(self, remote: str, instance: str = "") -> None:
        try:
            remote = str(ipaddress.IPv4Address(remote))
        except ValueError:
            raise InvalidInput(f"invalid remote IP {remote[:64]!r}") from None
        waiting = self._waiting.get(remote)
        if waiting is not None and (not instance or waiting.instance == instance):
            del self._waiting[remote]
            self._save()
            return
        running = self._sessions.get(remote)
        if running is None or (instance and running.config.instance != instance):
            raise NotFound("no bfd session")
        self._end(remote)
        self._save()

    def list(self) -> list[BfdGetEntry]:
        out = [BfdGetEntry(instance=r.config.instance, remote_ip=remote,
                           source_ip=r.session.source, port=self.port,
                           interval=r.session.interval_us, retry_count=r.session.multiplier,
                           state=STATE_NAMES[r.session.state])
               for remote, r in self._sessions.items()]
        out += [BfdGetEntry(instance=c.instance, remote_ip=remote, source_ip=c.source,
                            port=self.port, interval=c.interval_us, retry_count=c.multiplier,
                            state=STATE_NAMES[DOWN])  # not started yet: retried
                for remote, c in self._waiting.items()]
        return sorted(out, key=lambda e: ipaddress.IPv4Address(e.remote_ip))

    # -- internals
    def _start_session(self, config: SessionConfig) -> None:
        source = config.source
        if ipaddress.IPv4Address(source).is_unspecified:
            try:
                source = _route_source(config.remote)
            except OSError as exc:
                raise InvalidInput(f"no route to {config.remote}: {exc}") from None
        self._listen()
        sock = _sender(source, config.remote, self.port)
        session = Session(config.remote, source, config.instance, config.interval_us,
                          config.multiplier)
        running = _Running(config, session, sock)
        self._sessions[config.remote] = running
        running.task = asyncio.get_running_loop().create_task(self._run(running))
        log.info("BFD session with %s from %s (instance %s, %d us x %d)", config.remote,
                 source, config.instance, config.interval_us, config.multiplier)

    def _end(self, remote: str) -> None:
        running = self._sessions.pop(remote)
        if running.task is not None:
            running.task.cancel()
        running.session.state = ADMIN_DOWN
        running.session.diag = DIAG_ADMIN_DOWN
        self._send(running)  # RFC 5880 §6.8.16: tell the peer, so it does not wait to time out
        running.sock.close()

    def _send(self, running: _Running, *, final: bool = False) -> None:
        with contextlib.suppress(OSError):  # unreachable peer: its ICMP error comes back here
            running.sock.send(running.session.packet(final=final).encode())

    async def _run(self, running: _Running) -> None:
        """Send every TX interval (jittered) and run the detection timer."""
        s = running.session
        next_tx = self._now()
        while True:
            now = self._now()
            if now >= next_tx:
                self._send(running)
                jitter = random.uniform(0.0, 0.1 if s.multiplier == 1 else JITTER)
                next_tx = now + s.tx_interval_s() * (1 - jitter)
            self._decided(running, s.expire(now))
            deadline = s.deadline()
            wait = min(next_tx, deadline if deadline is not None else next_tx) - now
            running.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.wake.wait(), max(wait, 0.001))
            if running.wake.is_set():
                next_tx = self._now()  # parameters changed: send at once (Poll)

    def _decided(self, running: _Running, role: str | None) -> None:
        if role is None:
            return
        s = running.session
        log.info("BFD %s: %s, this node %s for %s (discriminators %d/%d)", s.remote,
                 STATE_NAMES[s.state], role, running.config.instance, s.local_disc,
                 s.remote_disc)
        try:
            self.notify(running.config.instance, role)
        except Exception:
            log.exception("BFD HA notification failed")

    def _readable(self) -> None:
        assert self._listener is not None
        for _ in range(64):  # drain, but let the loop breathe
            try:
                data, anc, _flags, addr = self._listener.recvmsg(
                    512, socket.CMSG_SPACE(4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            ttl = next((int.from_bytes(d[:4], sys.byteorder) for lvl, typ, d in anc
                        if lvl == socket.IPPROTO_IP and typ == socket.IP_TTL), None)
            self.packet_in(data, addr[0], ttl)

    def packet_in(self, data: bytes, source: str, ttl: int | None) -> None:
        """One received datagram: checked (RFC 5881 TTL, RFC 5880 §6.8.6) and run."""
        running = self._sessions.get(source)
        if running is None:
            log.debug("BFD packet from %s: no session", source)
            return
        if ttl is not None and ttl != TTL:
            log.debug("BFD packet from %s: TTL %d, not %d: discarded", source, ttl, TTL)
            return
        try:
            pkt = decode(data)
            role = running.session.receive(pkt, self._now())
        except ValueError as exc:
            log.debug("BFD packet from %s discarded: %s", source, exc)
            return
        if pkt.poll:  # §6.8.6: answer a Poll with a Final at once
            self._send(running, final=True)
        self._decided(running, role)

    def _save(self) -> None:
        if self.path is None:
            return
        configs = [r.config for r in self._sessions.values()] + list(self._waiting.values())
        data = {"Attr": [c.entry().wire() for c in configs if not c.from_flag]}
        try:
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True))
        except OSError as exc:
            log.warning("BFD sessions not saved to %s: %s", self.path, exc)
