"""Real SCTP peers without the kernel SCTP module: a small ctypes binding to libusrsctp.

Debian's `libusrsctp2` (`libusrsctp.so.2`) runs a whole SCTP stack in user space. Started with
`usrsctp_init(0, ...)` it speaks SCTP directly over IP (protocol 132) through raw sockets, so
its packets look on the wire like those of a kernel stack and the datapath can NAT them.

Constraints (measured, see tests/integration/test_usrsctp.py):
- one stack per process: `lib()` runs `usrsctp_init` once; the stack learns the local
  addresses then (getifaddrs), so the namespace must be addressed before it starts;
- the stack lives in the network namespace the process was in at `lib()` (its raw sockets and
  threads): run a peer as a process inside the namespace (`Netns.popen([sys.executable, "-m",
  "pyloxi.testing.usrsctp", "server", ...])`) rather than setns-ing a thread of a test;
- it needs CAP_NET_RAW, and its raw sockets receive every SCTP packet of the namespace: two
  stacks in one namespace see each other's packets and answer those of unknown associations
  with ABORT (out of the blue; measured: a second server in the namespace makes the first one's
  clients fail with ECONNREFUSED), so run one peer process per namespace, or start the others
  with `--blackhole 2`;
- while a stack runs, the kernel sends no ICMP protocol-unreachable for SCTP (a raw socket took
  the packet); with none running it sends one per packet, and usrsctp ignores them (no ICMP
  socket in raw mode): a client facing a namespace without a stack retransmits its INIT until
  the limit and fails with ETIMEDOUT (~3.5 s with `--fast`), not ECONNREFUSED;
- source addresses ignore routing: the stack has no routing table (its routes carry no
  interface), so a multihomed endpoint sends every packet from one of its bound addresses (the
  last one bound, measured), whichever path it takes; the peer answers SACKs and HEARTBEATs to
  that source. The primary path is the first address given to connectx. A path failover works
  when the link that dies is not the one of that source;
- calls block (the stack has its own timer and receive threads; ctypes drops the GIL).

PPIDs are host integers here and network byte order on the wire (the socket API passes the
field through untouched, so the binding converts), as kernel-stack applications do with htonl.

CLI: `python -m pyloxi.testing.usrsctp server --bind A[,B] --port P` echoes every message back
on its association with the same stream id and PPID and prints one line per association event
and message; `client --connect A[,B] --port P --stream S[,S2..] --ppid N[,N2..] --count K`
sends K messages (stream and PPID lists are cycled), prints each echo, then shuts down cleanly.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import ipaddress
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

SONAME = "libusrsctp.so.2"
IPPROTO_SCTP = 132
SOCK_STREAM, SOCK_SEQPACKET = 1, 5  # one-to-one / one-to-many style
SCTP_PEER_ADDR_PARAMS, SCTP_EVENT, SCTP_RECVRCVINFO = 0x0A, 0x1E, 0x1F
SCTP_STATUS = 0x100
SCTP_BINDX_ADD_ADDR = 0x8001
SCTP_SENDV_SNDINFO = SCTP_RECVV_RCVINFO = 1
MSG_NOTIFICATION = 0x2000
SCTP_EOF = 0x0100
SHUT_WR = 1
SCTP_ASSOC_CHANGE, SCTP_PEER_ADDR_CHANGE, SCTP_SHUTDOWN_EVENT = 1, 2, 5
ASSOC_STATES = {1: "comm-up", 2: "comm-lost", 3: "restart", 4: "shutdown-complete",
                5: "cant-start"}
ADDR_STATES = {1: "available", 2: "unreachable", 3: "removed", 4: "added", 5: "made-primary",
               6: "confirmed"}


class SndInfo(ctypes.Structure):
    _fields_ = [("sid", ctypes.c_uint16), ("flags", ctypes.c_uint16), ("ppid", ctypes.c_uint32),
                ("context", ctypes.c_uint32), ("assoc_id", ctypes.c_uint32)]


class RcvInfo(ctypes.Structure):
    _fields_ = [("sid", ctypes.c_uint16), ("ssn", ctypes.c_uint16), ("flags", ctypes.c_uint16),
                ("ppid", ctypes.c_uint32), ("tsn", ctypes.c_uint32), ("cumtsn", ctypes.c_uint32),
                ("context", ctypes.c_uint32), ("assoc_id", ctypes.c_uint32)]


class Event(ctypes.Structure):
    _fields_ = [("assoc_id", ctypes.c_uint32), ("type", ctypes.c_uint16), ("on", ctypes.c_uint8)]


class UsrsctpError(OSError):
    pass


_lib: ctypes.CDLL | None = None
_init_lock = threading.Lock()

# Stack-wide defaults (milliseconds / counts) that keep path failure detection fast in tests;
# applied right after usrsctp_init (which resets every sysctl) and used by sockets made later.
FAST_FAILOVER = {"rto_min_default": 100, "rto_max_default": 400, "rto_initial_default": 200,
                 "init_rto_max_default": 400, "heartbeat_interval_default": 200,
                 "path_rtx_max_default": 2, "assoc_rtx_max_default": 10}


def lib() -> ctypes.CDLL:
    """The library, loaded and initialised (raw IP, no UDP encapsulation) once per process."""
    global _lib
    with _init_lock:
        if _lib is None:
            so = ctypes.CDLL(SONAME, use_errno=True)
            so.usrsctp_init.argtypes = [ctypes.c_uint16, ctypes.c_void_p, ctypes.c_void_p]
            so.usrsctp_init.restype = None
            for name in ("usrsctp_socket", "usrsctp_accept"):
                getattr(so, name).restype = ctypes.c_void_p
            so.usrsctp_socket.argtypes = [ctypes.c_int] * 3 + [ctypes.c_void_p] * 2 + [
                ctypes.c_uint32, ctypes.c_void_p]
            so.usrsctp_accept.argtypes = [ctypes.c_void_p] * 3
            so.usrsctp_sendv.restype = so.usrsctp_recvv.restype = ctypes.c_ssize_t
            so.usrsctp_sendv.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                         ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                         ctypes.c_uint32, ctypes.c_uint, ctypes.c_int]
            so.usrsctp_recvv.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                         *[ctypes.c_void_p] * 6]
            so.usrsctp_close.restype = None
            so.usrsctp_init(0, None, None)
            _lib = so
        return _lib


def sysctl(name: str, value: int) -> None:
    """usrsctp_sysctl_set_sctp_<name>(value): stack-wide, for sockets created afterwards."""
    if int(getattr(lib(), f"usrsctp_sysctl_set_sctp_{name}")(ctypes.c_uint32(value))) != 0:
        raise UsrsctpError(f"usrsctp sysctl {name}={value} refused")


def finish(timeout: float = 5) -> bool:
    """usrsctp_finish: stops the stack once every association is gone (retried until then)."""
    deadline = time.monotonic() + timeout
    while int(lib().usrsctp_finish()) != 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def sockaddrs(addrs: Sequence[str], port: int) -> tuple[int, bytes]:
    """(family, packed array of sockaddr_in / sockaddr_in6) as bindx/connectx take them."""
    ips = [ipaddress.ip_address(a) for a in addrs]
    if len({ip.version for ip in ips}) != 1:
        raise ValueError(f"mixed address families: {addrs}")
    out = b""
    for ip in ips:
        if ip.version == 4:
            out += (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + ip.packed
                    + bytes(8))
        else:
            out += (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + ip.packed
                    + bytes(4))
    return (socket.AF_INET if ips[0].version == 4 else socket.AF_INET6), out


def parse_sockaddr(raw: bytes) -> str:
    family = struct.unpack_from("=H", raw)[0] if len(raw) >= 2 else 0
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{struct.unpack_from('!H', raw, 2)[0]}"
    if family == socket.AF_INET6:
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        return f"[{addr}]:{struct.unpack_from('!H', raw, 2)[0]}"
    return "?"


@dataclass
class Message:
    data: bytes
    sid: int = 0
    ppid: int = 0
    assoc_id: int = 0
    peer: str = ""
    notification: bool = False


class Socket:
    """One usrsctp socket (blocking): SOCK_STREAM is one-to-one, SOCK_SEQPACKET one-to-many."""

    def __init__(self, family: int, kind: int = SOCK_STREAM, handle: int | None = None) -> None:
        self.family = family
        self.lib = lib()
        if handle is None:
            handle = self.lib.usrsctp_socket(family, kind, IPPROTO_SCTP, None, None, 0, None)
        if not handle:
            raise self._error("usrsctp_socket")
        self.handle: int = handle
        self.setsockopt(SCTP_RECVRCVINFO, struct.pack("=i", 1))

    def _error(self, what: str) -> UsrsctpError:
        err = ctypes.get_errno()
        return UsrsctpError(err, f"{what}: {errno.errorcode.get(err, err)}")

    def _check(self, rc: int, what: str) -> int:
        if rc < 0:
            raise self._error(what)
        return rc

    def setsockopt(self, option: int, value: bytes, level: int = IPPROTO_SCTP) -> None:
        self._check(int(self.lib.usrsctp_setsockopt(ctypes.c_void_p(self.handle), level, option,
                                                    value, len(value))), f"setsockopt {option}")

    def subscribe(self, *events: int) -> None:
        for ev in events:
            self.setsockopt(SCTP_EVENT, bytes(Event(0, ev, 1)))

    def getsockopt(self, option: int, size: int, level: int = IPPROTO_SCTP) -> bytes:
        buf = ctypes.create_string_buffer(size)
        length = ctypes.c_uint32(size)
        self._check(int(self.lib.usrsctp_getsockopt(ctypes.c_void_p(self.handle), level, option,
                                                    buf, ctypes.byref(length))),
                    f"getsockopt {option}")
        return buf.raw[:length.value]

    def primary(self) -> str:
        """The peer address of the primary path (SCTP_STATUS, struct sctp_paddrinfo at 24), or
        "?" when the association is gone already."""
        try:
            return parse_sockaddr(self.getsockopt(SCTP_STATUS, 256)[24:152])
        except UsrsctpError:
            return "?"

    def bindx(self, addrs: Sequence[str], port: int) -> None:
        _, raw = sockaddrs(addrs, port)
        self._check(int(self.lib.usrsctp_bindx(ctypes.c_void_p(self.handle), raw, len(addrs),
                                               SCTP_BINDX_ADD_ADDR)), "bindx")

    def listen(self, backlog: int = 16) -> None:
        self._check(int(self.lib.usrsctp_listen(ctypes.c_void_p(self.handle), backlog)), "listen")

    def accept(self) -> Socket:
        handle = self.lib.usrsctp_accept(ctypes.c_void_p(self.handle), None, None)
        if not handle:
            raise self._error("accept")
        return Socket(self.family, handle=handle)

    def connectx(self, addrs: Sequence[str], port: int) -> int:
        _, raw = sockaddrs(addrs, port)
        assoc = ctypes.c_uint32(0)
        self._check(int(self.lib.usrsctp_connectx(ctypes.c_void_p(self.handle), raw, len(addrs),
                                                  ctypes.byref(assoc))), "connectx")
        return assoc.value

    def send(self, data: bytes, sid: int = 0, ppid: int = 0, assoc_id: int = 0,
             flags: int = 0) -> int:
        info = SndInfo(sid, flags, socket.htonl(ppid), 0, assoc_id)
        return self._check(int(self.lib.usrsctp_sendv(
            ctypes.c_void_p(self.handle), data, len(data), None, 0, ctypes.byref(info),
            ctypes.sizeof(info), SCTP_SENDV_SNDINFO, 0)), "sendv")

    def recv(self, size: int = 65536) -> Message | None:
        """The next message or notification; None at the end of the association (1:1)."""
        buf = ctypes.create_string_buffer(size)
        frm = ctypes.create_string_buffer(128)
        fromlen = ctypes.c_uint32(128)
        info = RcvInfo()
        infolen = ctypes.c_uint32(ctypes.sizeof(info))
        infotype = ctypes.c_uint(0)
        flags = ctypes.c_int(0)
        n = self._check(int(self.lib.usrsctp_recvv(
            ctypes.c_void_p(self.handle), buf, size, frm, ctypes.byref(fromlen),
            ctypes.byref(info), ctypes.byref(infolen), ctypes.byref(infotype),
            ctypes.byref(flags))), "recvv")
        if n == 0 and not flags.value & MSG_NOTIFICATION:
            return None
        msg = Message(buf.raw[:n], peer=parse_sockaddr(frm.raw[:fromlen.value]),
                      notification=bool(flags.value & MSG_NOTIFICATION))
        if infotype.value == SCTP_RECVV_RCVINFO:
            msg.sid, msg.ppid, msg.assoc_id = info.sid, socket.ntohl(info.ppid), info.assoc_id
        return msg

    def shutdown(self, how: int = SHUT_WR) -> None:
        self._check(int(self.lib.usrsctp_shutdown(ctypes.c_void_p(self.handle), how)), "shutdown")

    def close(self) -> None:
        if self.handle:
            self.lib.usrsctp_close(ctypes.c_void_p(self.handle))
            self.handle = 0


def describe_notification(data: bytes) -> str:
    """One line for an SCTP notification (association or path change)."""
    ntype = struct.unpack_from("=H", data)[0] if len(data) >= 2 else 0
    if ntype == SCTP_ASSOC_CHANGE and len(data) >= 20:
        state, error, out_s, in_s, assoc = struct.unpack_from("=HHHHI", data, 8)
        return (f"assoc id={assoc} state={ASSOC_STATES.get(state, state)} error={error} "
                f"out={out_s} in={in_s}")
    if ntype == SCTP_PEER_ADDR_CHANGE and len(data) >= 148:
        state, error, assoc = struct.unpack_from("=III", data, 136)
        return (f"path id={assoc} addr={parse_sockaddr(data[8:136])} "
                f"state={ADDR_STATES.get(state, state)} error={error}")
    if ntype == SCTP_SHUTDOWN_EVENT and len(data) >= 12:
        return f"shutdown-event id={struct.unpack_from('=I', data, 8)[0]}"
    return f"notification type={ntype}"


def _split(text: str) -> list[str]:
    return [p for p in text.split(",") if p]


def _say(line: str) -> None:
    print(line, flush=True)


def serve(addrs: Sequence[str], port: int) -> None:
    family, _ = sockaddrs(addrs, port)
    sock = Socket(family, SOCK_SEQPACKET)
    sock.subscribe(SCTP_ASSOC_CHANGE, SCTP_PEER_ADDR_CHANGE, SCTP_SHUTDOWN_EVENT)
    sock.bindx(addrs, port)
    sock.listen()
    _say(f"listening {','.join(addrs)} port {port}")
    while True:
        msg = sock.recv()
        if msg is None:
            continue
        if msg.notification:
            _say(describe_notification(msg.data))
            continue
        _say(f"msg id={msg.assoc_id} sid={msg.sid} ppid={msg.ppid} from={msg.peer} "
             f"len={len(msg.data)} data={msg.data.decode(errors='replace')}")
        sock.send(msg.data, msg.sid, msg.ppid, msg.assoc_id)


def run_client(args: argparse.Namespace) -> int:
    addrs = _split(args.connect)
    family, _ = sockaddrs(addrs, args.port)
    streams = [int(s) for s in _split(args.stream)]
    ppids = [int(p) for p in _split(args.ppid)]
    sock = Socket(family, SOCK_STREAM)
    sock.subscribe(SCTP_PEER_ADDR_CHANGE)
    if args.bind:
        sock.bindx(_split(args.bind), 0)
    assoc = sock.connectx(addrs, args.port)
    _say(f"connected id={assoc} to {','.join(addrs)} port {args.port} primary={sock.primary()}")
    for i in range(args.count):
        sid, ppid = streams[i % len(streams)], ppids[i % len(ppids)]
        payload = f"{args.data}-{i}".encode()
        t0 = time.monotonic()
        sock.send(payload, sid, ppid)
        while True:
            msg = sock.recv()
            if msg is None:
                _say("closed-by-peer")
                return 1
            if msg.notification:
                _say(describe_notification(msg.data))
                continue
            break
        rtt = (time.monotonic() - t0) * 1000
        _say(f"echo seq={i} sid={msg.sid} ppid={msg.ppid} from={msg.peer} rtt_ms={rtt:.1f} "
             f"data={msg.data.decode(errors='replace')}")
        if i + 1 < args.count and args.interval:
            time.sleep(args.interval)
    sock.shutdown()
    while True:
        last = sock.recv()
        if last is None:
            break
        if last.notification:
            _say(describe_notification(last.data))
    sock.close()
    _say("closed" if finish() else "closed (stack still busy)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyloxi.testing.usrsctp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true",
                    help="short RTOs and heartbeats: path failure noticed within ~1 s")
    ap.add_argument("--blackhole", type=int, choices=(0, 1, 2), default=0,
                    help="no ABORT for packets of unknown associations (1: INITs only, 2: all)")
    sub = ap.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("server", help="echo every message back (same stream id and PPID)")
    srv.add_argument("--bind", required=True, help="local address[es], comma separated")
    srv.add_argument("--port", type=int, required=True)
    cli = sub.add_parser("client", help="send messages, print the echoes, shut down")
    cli.add_argument("--connect", required=True, help="server address[es], comma separated")
    cli.add_argument("--bind", default="", help="local address[es] (default: all)")
    cli.add_argument("--port", type=int, required=True)
    cli.add_argument("--stream", default="0", help="stream id[s], cycled")
    cli.add_argument("--ppid", default="0", help="PPID[s], cycled")
    cli.add_argument("--count", type=int, default=1)
    cli.add_argument("--interval", type=float, default=0.0, help="seconds between messages")
    cli.add_argument("--data", default="hello")
    cli.add_argument("--timeout", type=float, default=30.0, help="give up after (exit 3)")
    args = ap.parse_args(argv)
    lib()
    sysctl("nr_outgoing_streams_default", 64)
    if args.fast:
        for name, value in FAST_FAILOVER.items():
            sysctl(name, value)
    if args.blackhole:
        sysctl("blackhole", args.blackhole)
    if args.role == "server":
        serve(_split(args.bind), args.port)
        return 0

    def give_up() -> None:
        _say(f"timeout after {args.timeout:g}s")
        sys.stdout.flush()
        os._exit(3)

    timer = threading.Timer(args.timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        return run_client(args)
    except UsrsctpError as exc:
        _say(f"error {exc}")
        return 2
    finally:
        timer.cancel()


if __name__ == "__main__":
    sys.exit(main())
