"""The firewall rule table (loxilb's /config/firewall): validation, order, and what the
datapath holds. Pure: the datapath is reached through `FirewallDatapath`.

Rules are keyed by all of their match fields and the preference (loxilb's rule key); the rule
with the highest preference is judged first, ties in creation order. The datapath gets the
whole ordered list on every change (`set_firewall`), written as one table it swaps in.

A `doSnat` rule is egress SNAT (docs/operations.md "Egress SNAT"): its flows' source becomes
toIP (and toPort, or an allocated port). `onDefault` rules are given to the datapath only
while this node is not HA BACKUP (`set_backup`), and their toIP is then this node's to own
(`local_ips`).

`trap` sends a matching packet to the host's own stack untouched (no load balancing: loxilb's
"to the control plane"); `redirect` + `redirectPortName` sends it out of that interface
untouched (an unknown interface: the datapath refuses, 400). `record` (loxilb's packet
tracing) is refused.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.firewall import FirewallEntry, FirewallOptionEntry, FirewallRuleEntry
from pyloxi.model.limits import PORT_MAX

log = logging.getLogger("pyloxi.firewall")

MAX_FW_RULES = 256  # PL_FW_MAX in bpf/include/pyloxi/maps.h
_PORT_PROTOS = {6: "tcp", 17: "udp", 132: "sctp"}


@dataclass(frozen=True, slots=True)
class FwRuleProgram:
    """One rule as the datapath needs it."""

    id: int  # the rule's counter slot, stable while the rule lives (0..MAX_FW_RULES-1)
    src: str  # CIDR; "": any
    dst: str
    sport: tuple[int, int]  # inclusive, host order
    dport: tuple[int, int]
    proto: int  # 0: any
    ifname: str  # "": any
    allow: bool  # else drop (unless snat_ip, trap or redirect)
    mark: int  # allow: skb->mark, 0: none
    snat_ip: str = ""  # egress SNAT (doSnat): the new source address; "": not an SNAT rule
    snat_port: int = 0  # its port, host order; 0: allocated as fullnat allocates
    trap: bool = False  # to the host's own stack untouched, no load balancing
    redirect: str = ""  # out of this interface untouched; "": not a redirect rule


class FirewallDatapath(Protocol):
    def set_firewall(self, rules: Sequence[FwRuleProgram]) -> None: ...
    def firewall_counters(self) -> dict[int, tuple[int, int]]: ...


RuleKey = tuple[str, str, int, int, int, int, int, str, int]


def _range(lo: int, hi: int, what: str) -> tuple[int, int]:
    if lo == 0 and hi == 0:
        return 0, PORT_MAX
    if hi == 0:  # only the minimum: that one port
        return lo, lo
    if lo > hi:
        raise InvalidInput(f"invalid {what} port range: min {lo} > max {hi}")
    return lo, hi


def _action(opts: FirewallOptionEntry) -> bool:
    """True: allow, False: drop, trap, redirect or SNAT (_snat); refuses what is not
    supported or contradictory."""
    if opts.record:  # loxilb's packet dump/trace of matching packets: nothing here does that
        raise InvalidInput("firewall option record (packet tracing) is not supported")
    if opts.allow and opts.drop:
        raise InvalidInput("firewall rule: allow and drop are exclusive, give one action")
    for name, given in (("doSnat", opts.do_snat), ("trap", opts.trap),
                        ("redirect", opts.redirect)):
        others = [o for o, on in (("allow", opts.allow), ("drop", opts.drop),
                                  ("trap", opts.trap), ("redirect", opts.redirect),
                                  ("doSnat", opts.do_snat)) if on and o != name]
        if given and others:
            raise InvalidInput(f"firewall rule: {name} is an action of its own, not with "
                               f"{' or '.join(others)}")
    if opts.redirect and not opts.redirect_port_name:
        raise InvalidInput("firewall rule: redirect needs redirectPortName (the interface "
                           "the packets leave by)")
    if opts.redirect_port_name and not opts.redirect:
        raise InvalidInput("firewall rule: redirectPortName needs redirect")
    if opts.fw_mark and opts.do_snat:
        raise InvalidInput("firewall rule: fwMark not allowed together with doSnat")
    if opts.fw_mark and not opts.allow:
        raise InvalidInput("firewall rule: fwMark needs the allow action")
    if opts.on_default and not opts.do_snat:
        raise InvalidInput("firewall rule: onDefault (--egress) needs doSnat")
    if not opts.do_snat and (opts.to_ip or opts.to_port):
        raise InvalidInput("firewall rule: toIP and toPort need doSnat")
    return opts.allow  # no action: drop (loxilb's default)


def _snat(args: FirewallRuleEntry, opts: FirewallOptionEntry) -> tuple[str, int]:
    """(toIP, toPort) of a doSnat rule, checked; ("", 0) for other rules."""
    if not opts.do_snat:
        return "", 0
    if not opts.to_ip:
        raise InvalidInput("firewall rule: doSnat needs toIP (masquerade to the interface "
                           "address is not supported)")
    try:
        ip = ipaddress.ip_address(opts.to_ip)
    except ValueError:
        raise InvalidInput(f"firewall rule: toIP {opts.to_ip[:60]!r} is not an IP address") \
            from None
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback:
        raise InvalidInput(f"firewall rule: toIP {ip} cannot be a source address")
    fams = {ipaddress.ip_network(p).version for p in (args.source_ip, args.destination_ip) if p}
    if fams and fams != {ip.version}:
        raise InvalidInput(f"firewall rule: toIP {ip} is not of the family of sourceIP/"
                           "destinationIP")
    if opts.to_port and args.protocol and args.protocol not in _PORT_PROTOS:
        raise InvalidInput("firewall rule: toPort needs protocol 6 (tcp), 17 (udp) or 132 "
                           f"(sctp), not {args.protocol}")
    return str(ip), opts.to_port


def _check_args(args: FirewallRuleEntry) -> tuple[tuple[int, int], tuple[int, int]]:
    sport = _range(args.min_source_port, args.max_source_port, "source")
    dport = _range(args.min_destination_port, args.max_destination_port, "destination")
    if (sport != (0, PORT_MAX) or dport != (0, PORT_MAX)) and args.protocol not in _PORT_PROTOS:
        raise InvalidInput("firewall rule: port ranges need protocol 6 (tcp), 17 (udp) or "
                           f"132 (sctp), not {args.protocol}")
    fams = {ipaddress.ip_network(p).version for p in (args.source_ip, args.destination_ip) if p}
    if len(fams) > 1:
        raise InvalidInput("firewall rule: sourceIP and destinationIP of different families")
    return sport, dport


def rule_key(args: FirewallRuleEntry) -> RuleKey:
    return (args.source_ip, args.destination_ip, args.min_source_port, args.max_source_port,
            args.min_destination_port, args.max_destination_port, args.protocol,
            args.port_name, args.preference)


@dataclass(slots=True)
class _Rule:
    entry: FirewallEntry
    prog: FwRuleProgram
    seq: int


class Firewall:
    """The rule table. Thread-safe; every change reaches the datapath, then `save` (the whole
    rule list, in judging order), before it returns; a change either refuses is undone and
    reported (datapath: 400, save: 500)."""

    def __init__(self, datapath: FirewallDatapath, *, saved: Sequence[FirewallEntry] = (),
                 save: Callable[[list[FirewallEntry]], None] | None = None,
                 backup: bool = False, on_change: Callable[[], None] | None = None) -> None:
        """`saved`: the rules `save` wrote last, installed again (one that no longer installs,
        e.g. its interface is gone, is logged and left out). The datapath's table is replaced
        whole: rules an earlier daemon left there and nobody saved are gone. `backup`: this
        node is HA BACKUP (see set_backup). `on_change`: called after the rules or the HA state
        changed what `local_ips` returns (the daemon's VIP follower recounts)."""
        self._dp = datapath
        self._backup = backup
        self._on_change = on_change
        self._rules: dict[RuleKey, _Rule] = {}
        self._lock = threading.Lock()
        self._seq = 0
        self._save: Callable[[list[FirewallEntry]], None] | None = None
        self._restore(saved)
        self._save = save

    def _restore(self, saved: Sequence[FirewallEntry]) -> None:
        """All saved rules in one swap of the datapath's table (the table of an earlier daemon
        stays live until then); if the datapath refuses the set, rule by rule, without the
        ones it refuses."""
        for entry in saved:
            try:
                self._insert(entry)
            except PyloxiError as exc:
                log.warning("saved firewall rule %s not restored: %s",
                            entry.rule_arguments.wire(), exc.message)
        try:
            self._dp.set_firewall(self._programs())
            return
        except (OSError, ValueError) as exc:
            log.warning("saved firewall rules refused as a set (%s): restored one by one", exc)
        kept = [r.entry for r in self._ordered()]
        self._rules.clear()
        self._dp.set_firewall([])
        for entry in kept:
            try:
                self.add(entry)
            except PyloxiError as exc:
                log.warning("saved firewall rule %s not restored: %s",
                            entry.rule_arguments.wire(), exc.message)

    def _ordered(self) -> list[_Rule]:
        return sorted(self._rules.values(),
                      key=lambda r: (-r.entry.rule_arguments.preference, r.seq))

    def _programs(self) -> list[FwRuleProgram]:
        """What the datapath holds: every rule in judging order, but the onDefault (egress)
        SNAT rules only while this node is not BACKUP (loxilb: they follow the MASTER)."""
        return [r.prog for r in self._ordered()
                if not (self._backup and r.entry.opts.on_default)]

    def local_ips(self) -> set[str]:
        """The SNAT addresses this node must own: toIP of each onDefault rule while the rule is
        active here (not BACKUP), so the replies of egress flows come to the MASTER; made local
        and announced like VIPs (the daemon's VIP follower). A plain doSnat rule's toIP is the
        operator's to route."""
        with self._lock:
            if self._backup:
                return set()
            return {r.prog.snat_ip for r in self._rules.values() if r.entry.opts.on_default}

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def set_backup(self, backup: bool) -> None:
        """The HA state of this node's default instance changed: BACKUP withdraws the onDefault
        rules from the datapath (new flows are no longer translated here; flows already open
        keep their conntrack entries), anything else puts them back. A datapath that refuses
        is logged: the table stays as it was."""
        with self._lock:
            if backup == self._backup:
                return
            self._backup = backup
            if not any(r.entry.opts.on_default for r in self._rules.values()):
                return
            try:
                self._dp.set_firewall(self._programs())
            except (OSError, ValueError) as exc:
                log.error("egress rules not %s: %s", "withdrawn" if backup else "restored", exc)
                return
        self._changed()
        log.info("egress (onDefault) SNAT rules %s", "withdrawn: BACKUP" if backup else "active")

    def _program(self) -> None:
        """The table to the datapath, then to disk; on a disk failure the datapath is given
        back the table as it was (by the caller's undo: _apply)."""
        try:
            self._dp.set_firewall(self._programs())
        except PyloxiError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"firewall rule refused by the datapath: {exc}") from exc
        if self._save is not None:
            try:
                self._save([r.entry for r in self._ordered()])
            except OSError as exc:
                raise PyloxiError(500, f"firewall rules not saved: {exc}") from exc

    def _restore_datapath(self) -> None:
        try:
            self._dp.set_firewall(self._programs())
        except Exception:
            log.exception("firewall rollback in the datapath failed")

    def add(self, entry: FirewallEntry) -> None:
        with self._lock:
            key = self._insert(entry)
            try:
                self._program()
            except Exception:
                del self._rules[key]
                self._restore_datapath()
                raise
        if entry.opts.on_default:
            self._changed()

    def _insert(self, entry: FirewallEntry) -> RuleKey:
        """Check `entry` and put it in the table (not yet in the datapath). Lock held."""
        args = entry.rule_arguments
        sport, dport = _check_args(args)
        allow = _action(entry.opts)
        key = rule_key(args)
        if key in self._rules:
            raise Conflict("fwrule-exists")
        used = {r.prog.id for r in self._rules.values()}
        free = next((i for i in range(MAX_FW_RULES) if i not in used), None)
        if free is None:
            raise CapacityExceeded(f"firewall full: {MAX_FW_RULES} rules")
        snat_ip, snat_port = _snat(args, entry.opts)
        prog = FwRuleProgram(id=free, src=args.source_ip, dst=args.destination_ip,
                             sport=sport, dport=dport, proto=args.protocol,
                             ifname=args.port_name, allow=allow, mark=entry.opts.fw_mark,
                             snat_ip=snat_ip, snat_port=snat_port, trap=entry.opts.trap,
                             redirect=entry.opts.redirect_port_name)
        other = bool(snat_ip) or entry.opts.trap or entry.opts.redirect  # an action not drop
        clean = entry.model_copy(update={"opts": entry.opts.model_copy(update={
            "counter": "", "drop": not allow and not other, "to_ip": snat_ip})})
        self._seq += 1
        self._rules[key] = _Rule(clean, prog, self._seq)
        return key

    def delete(self, args: FirewallRuleEntry) -> None:
        key = rule_key(args)
        with self._lock:
            rule = self._rules.pop(key, None)
            if rule is None:
                raise NotFound("no such firewall rule")
            try:
                self._program()
            except Exception:
                self._rules[key] = rule
                self._restore_datapath()
                raise
        if rule.entry.opts.on_default:
            self._changed()

    def list(self) -> list[FirewallEntry]:
        with self._lock:
            rules = self._ordered()
            counters = self._dp.firewall_counters()
        out = []
        for r in rules:
            pk, by = counters.get(r.prog.id, (0, 0))
            opts = r.entry.opts.model_copy(update={"counter": f"{pk}:{by}"})
            out.append(r.entry.model_copy(update={"opts": opts}))
        return out
