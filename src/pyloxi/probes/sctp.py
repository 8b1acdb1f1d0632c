"""SCTP probe without a kernel SCTP stack: a raw INIT, answered by INIT-ACK (up) or ABORT (down).

The INIT is built here (common header + INIT chunk, CRC32c checksum). After an INIT-ACK the prober
sends an ABORT carrying the peer's initiate tag, so the peer drops the half-opened association
state at once. Silence until the timeout means down. Replies are matched to waiting probes by
(peer address, peer port, our port, verification tag == our initiate tag).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct

from pyloxi.probes.rawsock import RawProber
from pyloxi.probes.types import ProbeResult

IPPROTO_SCTP = 132
CHUNK_INIT, CHUNK_INIT_ACK, CHUNK_ABORT = 1, 2, 6


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def sctp_packet(sport: int, dport: int, vtag: int, chunks: bytes) -> bytes:
    """Common header + chunks with the CRC32c filled in (stored little-endian, RFC 4960 App. B)."""
    head = struct.pack("!HHII", sport, dport, vtag, 0)
    csum = crc32c(head + chunks)
    return struct.pack("!HHI", sport, dport, vtag) + struct.pack("<I", csum) + chunks


def init_chunk(init_tag: int, tsn: int, a_rwnd: int = 65535, os_: int = 10,
               mis: int = 65535) -> bytes:
    return struct.pack("!BBHIIHHI", CHUNK_INIT, 0, 20, init_tag, a_rwnd, os_, mis, tsn)


def init_ack_chunk(init_tag: int, tsn: int, cookie: bytes = b"pyloxi-cookie") -> bytes:
    # State Cookie parameter (type 7), padded to 4 bytes.
    param = struct.pack("!HH", 7, 4 + len(cookie)) + cookie
    param += b"\0" * (-len(param) % 4)
    body = struct.pack("!IIHHI", init_tag, 65535, 10, 10, tsn) + param
    return struct.pack("!BBH", CHUNK_INIT_ACK, 0, 4 + len(body)) + body


def abort_chunk(t_bit: bool = False) -> bytes:
    return struct.pack("!BBH", CHUNK_ABORT, 1 if t_bit else 0, 4)


Parsed = tuple[int, int, int, list[tuple[int, bytes]]]


def parse_sctp(data: bytes, has_ip_header: bool) -> Parsed | None:
    """-> (sport, dport, vtag, [(chunk type, chunk value)]) or None if malformed."""
    if has_ip_header:
        if not data:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 12:
        return None
    sport, dport, vtag = struct.unpack_from("!HHI", data, 0)
    chunks: list[tuple[int, bytes]] = []
    off = 12
    while off + 4 <= len(data):
        ctype, _flags, clen = struct.unpack_from("!BBH", data, off)
        if clen < 4:
            break
        chunks.append((ctype, data[off + 4: off + clen]))
        off += clen + (-clen % 4)
    return sport, dport, vtag, chunks


class SctpProber(RawProber):
    """Owns the raw SCTP sockets of one event loop."""

    NAME = "sctp"
    PROTO_V4 = PROTO_V6 = IPPROTO_SCTP

    def _on_readable(self, sock: socket.socket, v6: bool) -> None:
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(4096)
            except OSError:
                return
            parsed = parse_sctp(data, has_ip_header=not v6)
            if parsed is None:
                continue
            sport, dport, vtag, chunks = parsed
            peer = ipaddress.ip_address(addr[0].split("%", 1)[0]).compressed
            fut = self._waiting.get((peer, sport, dport, vtag))
            if fut is None or fut.done():
                continue
            for ctype, value in chunks:
                if ctype in (CHUNK_INIT_ACK, CHUNK_ABORT):
                    fut.set_result((ctype, value))
                    break

    async def probe(self, ip: str, port: int, timeout: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        opened = self._open(ip)
        if isinstance(opened, ProbeResult):
            return opened
        peer, v6, sock = opened
        sport = random.randint(1024, 65535)
        tag = random.randint(1, 0xFFFFFFFF)
        key = (peer, port, sport, tag)
        fut: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiting[key] = fut
        try:
            pkt = sctp_packet(sport, port, 0, init_chunk(tag, random.randint(0, 0xFFFFFFFF)))
            try:
                sock.sendto(pkt, (peer, 0))
                async with asyncio.timeout(timeout):
                    ctype, value = await fut
            except TimeoutError:
                return ProbeResult(False, f"sctp no INIT-ACK within {timeout:g}s")
            except OSError as exc:
                return ProbeResult(False, f"sctp send failed: {exc.strerror or exc}")
        finally:
            self._waiting.pop(key, None)
        if ctype == CHUNK_ABORT:
            return ProbeResult(False, "sctp ABORT in answer to INIT")
        if len(value) >= 4:
            (peer_tag,) = struct.unpack_from("!I", value, 0)
            with contextlib.suppress(OSError):
                sock.sendto(sctp_packet(sport, port, peer_tag, abort_chunk()), (peer, 0))
        return ProbeResult(True, "sctp INIT-ACK")
