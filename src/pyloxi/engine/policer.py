"""QoS policers (loxilb's /config/policy): validation, defaults, ids, and what the datapath
holds. Pure: the datapath is reached through `PolicerDatapath`.

loxilb's facts kept: rates in Mbps (at least 8), EBS always 2 x CBS (`excessBlkSize` ignored),
same ident with the same info is 409 "pol-exists", with other info it replaces the policer.
Not loxilb's: CBS 0 means 100 ms at the committed
rate (loxilb's 30,000,000 bytes lets a 100 Mbit/s policer pass 480 Mbit before it bites).
A target takes one policer; a rule target is by the rule's name and may not exist yet (the
policer attaches when a rule of that name is created, and again when it comes back).
pyloxi extensions: attachment 3, an endpoint ("IP" or "IP:PORT", of any rule), and 4, a client
("IP"); their addresses are kept canonical, so one address spelled two ways is one target.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.policy import (
    ATTACH_CLIENT,
    ATTACH_ENDPOINT,
    ATTACH_PORT,
    ATTACH_RULE,
    POL_SRTCM,
    POL_TRTCM,
    PolicyEntry,
    PolicyInfo,
    PolicyStats,
)

log = logging.getLogger("pyloxi.policer")

MAX_POLICERS = 8192  # PL_POL_MAX in bpf/include/pyloxi/maps.h: ids 1..MAX_POLICERS-1
MIN_RATE_MBPS = 8  # loxilb's minimum
MAX_RATE_MBPS = 400_000  # keeps the datapath's arithmetic inside 64 bits
MIN_BLK_SIZE = 1518  # a bucket must hold a full Ethernet frame, or big packets never pass
MAX_BLK_SIZE = 1_000_000_000
DEFAULT_BURST_MS = 100  # CBS 0: this much traffic at the committed rate (TCP needs it)
BYTES_PER_MBIT = 125_000


@dataclass(frozen=True, slots=True)
class PolicerProgram:
    """One policer as the datapath needs it."""

    id: int  # 1..MAX_POLICERS-1, stable while the policer lives
    srtcm: bool  # else trTCM
    cir: int  # committed rate, bytes per second
    pir: int  # peak rate, bytes per second (trTCM)
    cbs: int  # committed burst size, bytes
    ebs: int  # excess (srTCM) or peak (trTCM) burst size: 2 x cbs
    port: str  # interface name, or ""
    rule: str  # LB rule name, or ""
    # pyloxi extensions: an endpoint (its flows, of any rule) or a client (its flows)
    ep_ip: str = ""  # endpoint address, canonical text, or ""
    ep_port: int = 0  # endpoint port; 0: any port of ep_ip
    client: str = ""  # client address, canonical text, or ""


class PolicerDatapath(Protocol):
    def set_policer(self, pol: PolicerProgram) -> None: ...
    def remove_policer(self, pol_id: int) -> None: ...
    def policer_counters(self) -> dict[int, tuple[int, int, int, int]]: ...


def default_cbs(cir_mbps: int) -> int:
    return max(MIN_BLK_SIZE, cir_mbps * BYTES_PER_MBIT * DEFAULT_BURST_MS // 1000)


def normalize(info: PolicyInfo) -> PolicyInfo:
    """`info` checked, with the burst sizes it means (CBS default filled in, EBS = 2 x CBS)."""
    if info.type not in (POL_TRTCM, POL_SRTCM):
        raise InvalidInput(f"policy type {info.type} unknown: 0 (trTCM) or 1 (srTCM)")
    for name, rate in (("committedInfoRate", info.committed_info_rate),
                       ("peakInfoRate", info.peak_info_rate)):
        if not MIN_RATE_MBPS <= rate <= MAX_RATE_MBPS:
            raise InvalidInput(f"policy {name} {rate} Mbps out of range "
                               f"{MIN_RATE_MBPS}..{MAX_RATE_MBPS}")
    if info.type == POL_TRTCM and info.peak_info_rate < info.committed_info_rate:
        raise InvalidInput(f"policy peakInfoRate {info.peak_info_rate} below committedInfoRate "
                           f"{info.committed_info_rate} (trTCM)")
    cbs = info.committed_blk_size or default_cbs(info.committed_info_rate)
    if not MIN_BLK_SIZE <= cbs <= MAX_BLK_SIZE:
        raise InvalidInput(f"policy committedBlkSize {cbs} out of range "
                           f"{MIN_BLK_SIZE}..{MAX_BLK_SIZE} bytes")
    return info.model_copy(update={"committed_blk_size": cbs, "excess_blk_size": 2 * cbs})


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInput(f"policy targetObject.polObjName {what!r}: not an IP address "
                           f"(attachment {ATTACH_ENDPOINT}: IP or IP:PORT, "
                           f"{ATTACH_CLIENT}: IP)") from None


def endpoint_target(name: str) -> tuple[str, int]:
    """An endpoint policer's polObjName -> (canonical address, port; 0: any): "IP", "IP:PORT",
    "[IPv6]:PORT" (a bare IPv6 address is an address, not IP:PORT)."""
    try:
        return str(ipaddress.ip_address(name)), 0
    except ValueError:
        pass
    host, sep, port = name.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address with a port needs its brackets
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput(f"policy targetObject.polObjName {name!r}: expected IP or IP:PORT "
                           "(port 1..65535; IPv6: [IP]:PORT)")
    return _ip(host, name), int(port)


def _target(entry: PolicyEntry) -> tuple[int, str]:
    """(attachment, target): endpoint and client targets in canonical form, so that two
    spellings of one address are one target."""
    t = entry.target_object
    if t.attachment not in (ATTACH_PORT, ATTACH_RULE, ATTACH_ENDPOINT, ATTACH_CLIENT):
        raise InvalidInput(f"policy attachment {t.attachment} unknown: 1 (port), 2 (LB rule, "
                           "by its name), 3 (endpoint, IP or IP:PORT), 4 (client, IP)")
    if not t.pol_obj_name:
        raise InvalidInput("policy targetObject.polObjName missing")
    if t.attachment == ATTACH_ENDPOINT:
        ip, port = endpoint_target(t.pol_obj_name)
        return t.attachment, (f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}") if port else ip
    if t.attachment == ATTACH_CLIENT:
        return t.attachment, _ip(t.pol_obj_name, t.pol_obj_name)
    return t.attachment, t.pol_obj_name


def program(pol_id: int, entry: PolicyEntry) -> PolicerProgram:
    info = entry.policy_info
    kind, name = _target(entry)
    ep = endpoint_target(name) if kind == ATTACH_ENDPOINT else ("", 0)
    return PolicerProgram(
        id=pol_id, srtcm=info.type == POL_SRTCM,
        cir=info.committed_info_rate * BYTES_PER_MBIT, pir=info.peak_info_rate * BYTES_PER_MBIT,
        cbs=info.committed_blk_size, ebs=info.excess_blk_size,
        port=name if kind == ATTACH_PORT else "", rule=name if kind == ATTACH_RULE else "",
        ep_ip=ep[0], ep_port=ep[1], client=name if kind == ATTACH_CLIENT else "")


@dataclass(slots=True)
class _Policer:
    entry: PolicyEntry  # normalized, no stats
    prog: PolicerProgram


class Policers:
    """The policer table. Thread-safe; every change reaches the datapath, then `save` (every
    policer), before it returns; a change either refuses is undone (datapath: 400, save: 500)."""

    def __init__(self, datapath: PolicerDatapath, *, saved: Sequence[PolicyEntry] = (),
                 save: Callable[[list[PolicyEntry]], None] | None = None) -> None:
        """`saved`: what `save` wrote last, installed again; one that no longer installs (its
        interface is gone) is logged and left out."""
        self._dp = datapath
        self._pols: dict[str, _Policer] = {}
        self._lock = threading.Lock()
        self._save: Callable[[list[PolicyEntry]], None] | None = None
        for entry in saved:
            try:
                self.add(entry)
            except PyloxiError as exc:
                log.warning("saved policer %s not restored: %s", entry.policy_ident, exc.message)
        self._save = save

    def _check(self, entry: PolicyEntry) -> PolicyEntry:
        if not entry.policy_ident:
            raise InvalidInput("policy policyIdent missing")
        _target(entry)
        return entry.model_copy(update={"policy_info": normalize(entry.policy_info),
                                        "stats": None})

    def add(self, entry: PolicyEntry) -> None:
        clean = self._check(entry)
        ident = clean.policy_ident
        target = _target(clean)
        with self._lock:
            old = self._pols.get(ident)
            if old is not None and old.entry == clean:
                raise Conflict("pol-exists")
            for other in self._pols.values():
                if other.entry.policy_ident != ident and _target(other.entry) == target:
                    raise Conflict(f"policy target {target[1]!r} already has policer "
                                   f"{other.entry.policy_ident!r}")
            if old is not None:
                pol_id = old.prog.id
            else:
                used = {p.prog.id for p in self._pols.values()}
                pol_id = next((i for i in range(1, MAX_POLICERS) if i not in used), 0)
                if not pol_id:
                    raise CapacityExceeded(f"policers full: {MAX_POLICERS - 1}")
            new = _Policer(clean, program(pol_id, clean))
            self._set(new.prog)
            self._pols[ident] = new
            try:
                self._persist()
            except Exception:
                if old is None:
                    del self._pols[ident]
                    self._dp.remove_policer(pol_id)
                else:
                    self._pols[ident] = old
                    self._set(old.prog)
                raise

    def _set(self, prog: PolicerProgram) -> None:
        try:
            self._dp.set_policer(prog)
        except PyloxiError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"policer refused by the datapath: {exc}") from exc

    def _persist(self) -> None:
        if self._save is None:
            return
        try:
            self._save([p.entry for p in self._pols.values()])
        except OSError as exc:
            raise PyloxiError(500, f"policers not saved: {exc}") from exc

    def delete(self, ident: str) -> None:
        with self._lock:
            pol = self._pols.pop(ident, None)
            if pol is None:
                raise NotFound("pol-notfound")
            self._dp.remove_policer(pol.prog.id)
            try:
                self._persist()
            except Exception:
                self._pols[ident] = pol
                self._set(pol.prog)
                raise

    def list(self) -> list[PolicyEntry]:
        with self._lock:
            pols = list(self._pols.values())
            counters = self._dp.policer_counters()
        out = []
        for p in pols:
            okp, okb, drp, drb = counters.get(p.prog.id, (0, 0, 0, 0))
            stats = PolicyStats(packets_ok=okp, bytes_ok=okb, packets_dropped=drp,
                                bytes_dropped=drb)
            out.append(p.entry.model_copy(update={"stats": stats}))
        return out
