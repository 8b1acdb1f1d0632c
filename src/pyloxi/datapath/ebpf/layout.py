"""Python mirrors of bpf/include/pyloxi/maps.h (tests/datapath/test_layout.py checks them
against the BTF of the compiled object, so a change on one side fails the build).

Addresses and ports are stored in network byte order, as the datapath reads them off packets.
Addresses of both families share one 16-byte layout (union pl_addr) plus a family byte; an IPv4
address is stored IPv4-mapped (::ffff:a.b.c.d). `addr` / `addr_text` are the one conversion
between an address string and those 16 bytes: every key builder and reader goes through them.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from typing import Any

import numpy as np

MAX_SERVICES = 65536
MAX_EPS = 1024
MAX_SLOTS = 262139  # PL_MAX_SLOTS: the longest slot table of a version
EP_POOL = 262144  # PL_EP_POOL: ep_pool entries
SLOT_CHUNK = 32  # PL_SLOT_CHUNK: slots per slot_pool element
SLOT_POOL = 262144  # PL_SLOT_POOL: slot_pool elements
EP_GIDS = 262144  # PL_EP_GIDS: counter ids (ep_stats, conn_map)
GID_NONE = 0xFFFFFFFF  # PL_GID_NONE: ct_val.ep_gid of flows nothing counts (egress SNAT)
FIB_TICK_SHIFT = 20  # PL_FIB_TICK_SHIFT: ct_val.fib_tick is CLOCK_MONOTONIC ns >> this
CT_ENTRIES = 2097152
CT_HALF_ENTRIES = 262144
CT_DEL_BATCH = 256
CT_DEL_EST, CT_DEL_HALF = 0, 1
NAT_PORT_MIN = 49152

SVC_F_ALLOWLIST = 0x1
EP_F_ACTIVE = 0x1
MODE_DSR = 3  # enum pl_mode PL_MODE_DSR: forward-only flows (bpf/include/pyloxi/dsr.h)
EP_F_IPIP = 0x2  # dsr endpoint reached through IPIP (not on-link)
CT_F_IPIP = 0x1  # ct_val.flags: dsr flow encapsulated in IPIP
CT_F_SYNCED = 0x2  # ct_val.flags: copied from a peer by conntrack sync
# conntrack sync (bpf/include/pyloxi/ctsync.h)
SYNC_EST, SYNC_DEL, SYNC_NEW = 1, 2, 3
SYNC_NEW_ROOM = 4  # NEW events only while the ring's unread data is below 1/4 of it
SYNC_BATCH = 64
SYNC_LAYOUT = 2  # PL_SYNC_LAYOUT: ct_sync_ev.layout (the ct_val/ct_key layout it carries)
(SYNC_R_NONE, SYNC_R_INSERTED, SYNC_R_REFRESHED, SYNC_R_LOCAL, SYNC_R_FULL,
 SYNC_R_DELETED, SYNC_R_EXISTS) = range(7)

CT_SYN, CT_SYNACK, CT_ACK, CT_FIN, CT_RST, CT_SEEN = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
# SCTP: the first chunk of each packet of a direction (bpf/include/pyloxi/sctp.h)
CT_SC_INIT, CT_SC_INITACK, CT_SC_COOKIE, CT_SC_COOKIEACK = 0x0040, 0x0080, 0x0100, 0x0200
CT_SC_DATA, CT_SC_SHUT, CT_SC_SHUTACK, CT_SC_SHUTDONE = 0x0400, 0x0800, 0x1000, 0x2000
CT_SC_ABORT, CT_SC_MPATH, CT_SC_JOIN = 0x4000, 0x8000, 0x10000
MH_MAX = 3  # secondary VIPs of a service (PL_MH_MAX)
DIR_ORIG, DIR_REPLY = 0, 1
TD_SENT, TD_ACKED, TD_LIBERAL, TD_NO_WS = 0x01, 0x02, 0x04, 0xFF

STAT_NAMES = (
    "new_flow", "drop_source", "no_endpoint", "nat_exhausted", "ct_insert_fail",
    "fib_pass", "syn_reuse", "fragment", "reclaim", "ct_full", "reply_miss", "pickup",
    "pickup_refused", "out_of_window", "promote", "icmp_xlate", "icmp_sent", "icmp_limited",
    "mtu_pass", "xlate_refused", "ext_pass", "dsr_too_big", "sync_drop",
    "sync_new_skip", "fw_drop", "egress_refused", "policer_drop", "xdp_fwd", "xdp_partial",
    "xdp_new",
)


AF_INET, AF_INET6 = 2, 10  # PL_AF_*: the family bytes of the keys
ADDR_ZERO = bytes(16)
_V4_MAPPED = bytes(10) + b"\xff\xff"


def addr(text: str | None) -> tuple[bytes, int]:
    """An address string -> (its 16 bytes in the maps, its family): IPv4 as IPv4-mapped
    ::ffff:a.b.c.d with AF_INET, IPv6 as is with AF_INET6; None or "" -> (16 zero bytes, 0)."""
    if not text:
        return ADDR_ZERO, 0
    try:  # the common case, ~10x faster than ipaddress (a rule create converts ~20 addresses)
        return _V4_MAPPED + socket.inet_pton(socket.AF_INET, text), AF_INET
    except OSError:  # not dotted-quad IPv4 (glibc, like ipaddress, refuses leading zeros)
        pass
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return _V4_MAPPED + ip.packed, AF_INET
    # ::ffff:a.b.c.d written as IPv6 is the IPv4 address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.packed, AF_INET
    return ip.packed, AF_INET6


def addr_text(raw: bytes | bytearray | memoryview | np.ndarray) -> str:
    """16 bytes of an address as the maps hold it -> its text ("a.b.c.d" for IPv4-mapped)."""
    b = bytes(raw)
    if b[:12] == _V4_MAPPED:
        return socket.inet_ntoa(b[12:])
    return str(ipaddress.IPv6Address(b))


def pl_addr(text: str | None) -> Addr:
    """An address string as the ctypes union (for the fields of the mirrors below)."""
    return Addr.from_buffer_copy(addr(text)[0])


def family(text: str | None) -> int:
    return addr(text)[1]


def port_n(port: int) -> int:
    return socket.htons(port)


def n_port(value: int) -> int:
    return socket.ntohs(value)


class Addr(ctypes.Union):
    """union pl_addr: 16 bytes, IPv4 stored IPv4-mapped (w[3] holds the IPv4 address)."""

    _fields_ = [("b", ctypes.c_uint8 * 16), ("h", ctypes.c_uint16 * 8),
                ("w", ctypes.c_uint32 * 4)]


class SvcKey(ctypes.Structure):
    _fields_ = [("vip", Addr), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("family", ctypes.c_uint8), ("mark", ctypes.c_uint32)]


class SvcVal(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class SvcCfg(ctypes.Structure):
    _fields_ = [("vip", Addr), ("idle_timeout", ctypes.c_uint32),
                ("persist_timeout", ctypes.c_uint32), ("n_slots", ctypes.c_uint32),
                ("mode", ctypes.c_uint8), ("sel", ctypes.c_uint8), ("flags", ctypes.c_uint8),
                ("family", ctypes.c_uint8), ("port_base", ctypes.c_uint16),
                ("n_eps", ctypes.c_uint16), ("ep_base", ctypes.c_uint32),
                ("slot_base", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class EpVal(ctypes.Structure):
    _fields_ = [("ip", Addr), ("snat_ip", Addr), ("port", ctypes.c_uint16),
                ("flags", ctypes.c_uint8), ("weight", ctypes.c_uint8), ("family", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 3), ("gid", ctypes.c_uint32), ("pad2", ctypes.c_uint32)]


class SvcVer(ctypes.Structure):
    """The config of one version of a service: ver_map[svc_id * 2 + gen]; its endpoints and
    slot table are extents of ep_pool and slot_pool (see struct svc_cfg)."""

    _fields_ = [("cfg", SvcCfg)]


class SlotChunk(ctypes.Structure):
    """slot_pool: SLOT_CHUNK slots of a version's table, each an endpoint index."""

    _fields_ = [("idx", ctypes.c_uint16 * SLOT_CHUNK)]


class Counters(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class EpConn(ctypes.Structure):
    _fields_ = [("opened", ctypes.c_uint64), ("closed", ctypes.c_uint64)]


class CtKey(ctypes.Structure):
    _fields_ = [("saddr", Addr), ("daddr", Addr),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("family", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 2)]


class CtVal(ctypes.Structure):
    _fields_ = [("nat_saddr", Addr), ("nat_daddr", Addr),
                ("nat_sport", ctypes.c_uint16), ("nat_dport", ctypes.c_uint16),
                ("svc_id", ctypes.c_uint32), ("ep_gid", ctypes.c_uint32),
                ("ep_idx", ctypes.c_uint16), ("dir", ctypes.c_uint8),
                ("mode", ctypes.c_uint8), ("nat_family", ctypes.c_uint8),
                ("flags", ctypes.c_uint8), ("fib_mtu", ctypes.c_uint16),
                ("seen", ctypes.c_uint32),
                ("fib_ifindex", ctypes.c_uint32), ("fib_smac", ctypes.c_uint8 * 6),
                ("fib_dmac", ctypes.c_uint8 * 6), ("fib_tick", ctypes.c_uint32),
                ("td_lastack", ctypes.c_uint32), ("created_ns", ctypes.c_uint64),
                ("last_ns", ctypes.c_uint64), ("packets", ctypes.c_uint64),
                ("bytes", ctypes.c_uint64), ("td_end", ctypes.c_uint32),
                ("td_edge", ctypes.c_uint32), ("td_maxwin", ctypes.c_uint32),
                ("td_wscale", ctypes.c_uint8), ("td_wsopt", ctypes.c_uint8),
                ("td_flags", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class NatShare(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint16), ("count", ctypes.c_uint16)]


class CtSyncEv(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint8), ("result", ctypes.c_uint8), ("layout", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 13), ("okey", CtKey), ("rkey", CtKey),
                ("oval", CtVal), ("rval", CtVal)]


class CtSyncReq(ctypes.Structure):
    _fields_ = [("n", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("ev", CtSyncEv * SYNC_BATCH)]


class CtDelItem(ctypes.Structure):
    _fields_ = [("key", CtKey), ("created_ns", ctypes.c_uint64), ("svc_id", ctypes.c_uint32),
                ("ep_idx", ctypes.c_uint16), ("dir", ctypes.c_uint8), ("table", ctypes.c_uint8),
                ("deleted", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 7)]


class CtDelReq(ctypes.Structure):
    _fields_ = [("n", ctypes.c_uint32), ("closed", ctypes.c_uint32),
                ("item", CtDelItem * CT_DEL_BATCH)]


class EpAddrKey(ctypes.Structure):
    _fields_ = [("ip", Addr), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("family", ctypes.c_uint8)]


class AllowKey(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("ver_id", ctypes.c_uint32),
                ("addr", Addr)]


class FragKey(ctypes.Structure):
    _fields_ = [("saddr", Addr), ("daddr", Addr), ("id", ctypes.c_uint32),
                ("proto", ctypes.c_uint8), ("family", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 2)]


class FragVal(ctypes.Structure):
    _fields_ = [("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16), ("pad", ctypes.c_uint32)]


class IcmpBucket(ctypes.Structure):
    _fields_ = [("last_ns", ctypes.c_uint64), ("tokens", ctypes.c_uint64)]


class AffKey(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("saddr", Addr)]


class AffVal(ctypes.Structure):
    _fields_ = [("last_ns", ctypes.c_uint64), ("ep_idx", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class MhVal(ctypes.Structure):
    _fields_ = [("vip", Addr * (1 + MH_MAX)), ("n", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class AssocKey(ctypes.Structure):
    _fields_ = [("svc_id", ctypes.c_uint32), ("vtag", ctypes.c_uint32)]


class AssocVal(ctypes.Structure):
    _fields_ = [("created_ns", ctypes.c_uint64), ("ep_idx", ctypes.c_uint32),
                ("nat_sport", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class RassocKey(ctypes.Structure):
    _fields_ = [("ep", Addr), ("vtag", ctypes.c_uint32), ("ep_port", ctypes.c_uint16),
                ("family", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class RassocVal(ctypes.Structure):
    _fields_ = [("vip", Addr), ("svc_id", ctypes.c_uint32), ("vport", ctypes.c_uint16),
                ("ep_idx", ctypes.c_uint16)]


def mh_val(vips: list[str]) -> MhVal:
    """mh_map's value for a service whose VIPs are `vips` (the primary first)."""
    v = MhVal(n=len(vips))
    for i, ip in enumerate(vips):
        v.vip[i] = pl_addr(ip)
    return v


def _fields(cls: type[ctypes.Structure]) -> list[tuple[str, Any]]:
    """``_fields_`` as (name, type) pairs (the mirrors have no bitfields)."""
    return [(f[0], f[1]) for f in cls._fields_]


def _dtype(cls: type[ctypes.Structure]) -> np.dtype:
    """A numpy dtype with the same fields and offsets as a ctypes mirror (pads left out)."""
    names, formats, offsets = [], [], []
    for name, ctype in _fields(cls):
        if name.startswith(("pad", "fib_")):  # the control plane never reads these
            continue
        names.append(name)
        # addresses: 16 raw bytes (compare with `addr(...)[0]` viewed as ADDR_DTYPE)
        formats.append(ADDR_DTYPE if ctype is Addr else np.dtype(ctype).newbyteorder("="))
        offsets.append(getattr(cls, name).offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": ctypes.sizeof(cls)})


# Conntrack layouts as numpy dtypes, for vectorised aging of a million entries.
ADDR_DTYPE = np.dtype("V16")
CT_KEY_DTYPE = _dtype(CtKey)
CT_VAL_DTYPE = _dtype(CtVal)
# A pl_ct_delete batch as numpy, so a sweep fills 256 items per run without Python loops.
CT_DEL_ITEM_DTYPE = np.dtype({
    "names": [name for name, _ in _fields(CtDelItem)],
    "formats": [f"V{ctypes.sizeof(CtKey)}" if name == "key" else np.dtype(ctype).newbyteorder("=")
                for name, ctype in _fields(CtDelItem)],
    "offsets": [getattr(CtDelItem, name).offset for name, _ in _fields(CtDelItem)],
    "itemsize": ctypes.sizeof(CtDelItem)})
CT_DEL_REQ_DTYPE = np.dtype({
    "names": ["n", "closed", "item"],
    "formats": ["<u4", "<u4", (CT_DEL_ITEM_DTYPE, CT_DEL_BATCH)],
    "offsets": [CtDelReq.n.offset, CtDelReq.closed.offset, CtDelReq.item.offset],
    "itemsize": ctypes.sizeof(CtDelReq)})

#: struct name in maps.h -> its mirror, for the BTF layout test
FW_MAX = 256  # PL_FW_MAX: firewall rules
FW_DROP, FW_ALLOW, FW_SNAT, FW_TRAP, FW_REDIRECT = 0, 1, 2, 3, 4  # fw_rule.action
SVC_EGRESS = MAX_SERVICES  # PL_SVC_EGRESS: ct_val.svc_id of egress SNAT flows
EGRESS_F_FIXED = 1  # PL_EGRESS_F_FIXED: ct_val.ep_idx, the source port is the rule's toPort


class FwRule(ctypes.Structure):
    _fields_ = [("saddr", Addr), ("smask", Addr), ("daddr", Addr), ("dmask", Addr),
                ("sport_lo", ctypes.c_uint16), ("sport_hi", ctypes.c_uint16),
                ("dport_lo", ctypes.c_uint16), ("dport_hi", ctypes.c_uint16),
                ("ifindex", ctypes.c_uint32), ("mark", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("proto", ctypes.c_uint8), ("action", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 2), ("snat_ip", Addr), ("snat_port", ctypes.c_uint16),
                ("snat_family", ctypes.c_uint8), ("pad2", ctypes.c_uint8),
                ("out_ifindex", ctypes.c_uint32)]


class FwTable(ctypes.Structure):
    _fields_ = [("n", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("rule", FwRule * FW_MAX)]


def fw_prefix(cidr: str) -> tuple[Addr, Addr]:
    """(network, mask) of a prefix as fw_rule holds them: an IPv4 /N is a /96+N of its
    IPv4-mapped address; "" (any address of either family): all zero."""
    if not cidr:
        return Addr(), Addr()
    net = ipaddress.ip_network(cidr, strict=False)
    bits = net.prefixlen + (96 if net.version == 4 else 0)
    mask = ((1 << bits) - 1) << (128 - bits) if bits else 0
    return pl_addr(str(net.network_address)), Addr.from_buffer_copy(mask.to_bytes(16, "big"))


POL_MAX = 8192  # PL_POL_MAX: policer ids 1..POL_MAX-1 (0: none)
POL_TRTCM, POL_SRTCM = 0, 1  # pol_val.type
POL_PORTS = 256  # pol_port max_entries
POL_EPS, POL_CLIENTS = 65536, 1024  # PL_POL_EPS, PL_POL_CLIENTS: pol_ep, pol_client entries


class PolVal(ctypes.Structure):
    _fields_ = [("lock", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("rate_c", ctypes.c_uint64), ("rate_e", ctypes.c_uint64),
                ("size_c", ctypes.c_uint64), ("size_e", ctypes.c_uint64),
                ("fill_c_ns", ctypes.c_uint64), ("fill_e_ns", ctypes.c_uint64),
                ("tok_c", ctypes.c_uint64), ("tok_e", ctypes.c_uint64),
                ("last_ns", ctypes.c_uint64)]


class PolCounters(ctypes.Structure):
    _fields_ = [("ok_packets", ctypes.c_uint64), ("ok_bytes", ctypes.c_uint64),
                ("drop_packets", ctypes.c_uint64), ("drop_bytes", ctypes.c_uint64)]


class PolCfg(ctypes.Structure):
    _fields_ = [("nports", ctypes.c_uint32), ("nclients", ctypes.c_uint32),
                ("neps", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class PolClientKey(ctypes.Structure):
    _fields_ = [("ip", Addr), ("family", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


MIRR_MAX = 32  # PL_MIRR_MAX: mirrors
MIRR_SPAN, MIRR_RSPAN = 0, 1  # mirr_cfg.type


class MirrCfg(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32), ("vlan", ctypes.c_uint16),
                ("type", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class MirrGate(ctypes.Structure):
    _fields_ = [("ports", ctypes.c_uint32), ("rules", ctypes.c_uint32)]


XDP_PORTS = 65536  # PL_XDP_PORTS: xdp_ports is an array indexed by ifindex, below this


class XdpPort(ctypes.Structure):
    """xdp_ports[ifindex]: the interface's own MAC, served when `on` (bpf/include/pyloxi/xdp.h)."""

    _fields_ = [("mac", ctypes.c_uint8 * 6), ("native", ctypes.c_uint8),
                ("on", ctypes.c_uint8)]


MIRRORS: dict[str, type[ctypes.Structure | ctypes.Union]] = {
    "pl_addr": Addr, "svc_key": SvcKey, "svc_val": SvcVal, "svc_cfg": SvcCfg, "svc_ver": SvcVer,
    "ep_val": EpVal, "slot_chunk": SlotChunk, "aff_key": AffKey, "aff_val": AffVal,
    "counters": Counters,
    "ep_conn": EpConn,
    "ct_del_item": CtDelItem, "ct_del_req": CtDelReq,
    "ct_key": CtKey, "ct_val": CtVal, "allow_key": AllowKey, "ep_addr_key": EpAddrKey,
    "frag_key": FragKey, "frag_val": FragVal, "icmp_bucket": IcmpBucket,
    "mh_val": MhVal, "assoc_key": AssocKey, "assoc_val": AssocVal,
    "rassoc_key": RassocKey, "rassoc_val": RassocVal,
    "ct_sync_ev": CtSyncEv, "ct_sync_req": CtSyncReq, "nat_share": NatShare,
    "fw_rule": FwRule, "fw_table": FwTable,
    "mirr_cfg": MirrCfg, "mirr_gate": MirrGate,
    "pol_val": PolVal, "pol_counters": PolCounters, "pol_cfg": PolCfg,
    "pol_client_key": PolClientKey,
    "xdp_port": XdpPort,
}


def allow_key(ver_id: int, cidr: str) -> AllowKey:
    """An allowed-source prefix of version `ver_id`: 32 bits of ver_id, then the 128-bit
    address (an IPv4 /N is a /96+N of its IPv4-mapped address)."""
    net = ipaddress.ip_network(cidr, strict=False)
    bits = net.prefixlen + (96 if net.version == 4 else 0)
    return AllowKey(prefixlen=32 + bits, ver_id=ver_id, addr=pl_addr(str(net.network_address)))


def ct_key(src: str, dst: str, sport: int, dport: int, proto: int) -> CtKey:
    """A conntrack key from text (ports in host order; the family is the source's)."""
    s, fam = addr(src)
    return CtKey(saddr=Addr.from_buffer_copy(s), daddr=pl_addr(dst), sport=port_n(sport),
                 dport=port_n(dport), proto=proto, family=fam)


def ct_val(nat_src: str, nat_dst: str, nat_sport: int, nat_dport: int, **fields: Any) -> CtVal:
    """A conntrack value rewriting to nat_src:nat_sport -> nat_dst:nat_dport (host order), with
    any other fields as given."""
    s, fam = addr(nat_src)
    return CtVal(nat_saddr=Addr.from_buffer_copy(s), nat_daddr=pl_addr(nat_dst),
                 nat_sport=port_n(nat_sport), nat_dport=port_n(nat_dport), nat_family=fam,
                 **fields)
