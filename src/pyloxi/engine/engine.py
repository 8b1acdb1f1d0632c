"""The engine: the rule table, and the only place that decides what the datapath holds.

Every mutation follows one pattern under a lock: validate completely (400, nothing touched) →
compute the new immutable `Rule` → swap it into the table → tell the datapath → persist. If the
datapath or the store fails, the table and the datapath are put back as they were and the
failure is re-raised as a PyloxiError.

Decisions where loxilb is silent or quirky (all documented at the place they are made):
- Rules overlap when they share VIP (or privateIP), protocol and block and their port ranges
  intersect; `host` does not separate rules because the L4 datapath cannot tell hosts apart.
- oper=attach on a missing rule creates it; attach/detach keep the installed rule's arguments
  and only change its endpoints. Detach of endpoints none of which are in the rule → 404.
- Liveness verdicts (`set_endpoint_state`) apply to every rule holding a matching endpoint,
  whether or not it has `monitor` on: a prober only reports hosts something asked it to watch,
  and sending flows to a host known to be down helps nobody.
- `restore` never writes the store: a rule that fails at boot (e.g. no route yet for onearm)
  stays in the file for the next start instead of being erased.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from pyloxi.engine.conntrack import to_entry
from pyloxi.engine.program import MAX_SERVICES, Datapath, ServiceProgram
from pyloxi.engine.rules import EpState, Rule, build_program, plan_endpoints, snat_planner
from pyloxi.engine.validate import RuleKey, RuleSpec, parse_key, validate, with_endpoints
from pyloxi.model.conntrack import ConntrackEntry
from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.lb import Endpoint, LoadBalancerEntry, NatMode, Oper

log = logging.getLogger(__name__)


class RuleStore(Protocol):
    def save(self, rules: list[LoadBalancerEntry]) -> None: ...


class _SvcIds:
    """Service ids 1..MAX_SERVICES-1. Next-fit (not lowest-free) so a just-freed id is not
    handed out again at once: a late counter read or a flow the datapath is still reaping
    cannot be attributed to the wrong service."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._next = 1

    def alloc(self) -> int:
        for _ in range(MAX_SERVICES - 1):
            sid = self._next
            self._next = sid % (MAX_SERVICES - 1) + 1
            if sid not in self._used:
                self._used.add(sid)
                return sid
        raise CapacityExceeded("no free service id")

    def free(self, sid: int) -> None:
        self._used.discard(sid)


def _datapath_error(exc: Exception) -> PyloxiError:
    if isinstance(exc, PyloxiError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.E2BIG, errno.ENOSPC):
        return CapacityExceeded(f"datapath table full: {exc}")
    return PyloxiError(500, f"datapath error: {exc}")


class Engine:
    def __init__(
        self,
        datapath: Datapath,
        *,
        store: RuleStore | None = None,
        snat_source: Callable[[str], str | None] | None = None,
        supported_modes: frozenset[NatMode] = frozenset(
            {NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT}
        ),
        supported_protocols: frozenset[str] = frozenset({"tcp", "udp", "icmp", "sctp"}),
        max_rules: int = MAX_SERVICES - 1,
    ) -> None:
        if not 0 <= max_rules <= MAX_SERVICES - 1:
            raise ValueError(f"max_rules must be in 0..{MAX_SERVICES - 1}")
        self._dp = datapath
        self._store = store
        self._snat_source = snat_source
        self._modes = supported_modes
        self._protocols = supported_protocols
        self._max_rules = max_rules
        self._rules: dict[RuleKey, Rule] = {}
        # (protocol, block, address) -> keys of rules matching that VIP or privateIP: keeps the
        # overlap check O(rules on that address) instead of O(all rules).
        self._by_addr: dict[tuple[str, int, str], set[RuleKey]] = {}
        self._ids = _SvcIds()
        self._created = itertools.count(1)
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- rule changes

    def add_rule(self, entry: LoadBalancerEntry) -> None:
        """Create, update in place, attach to or detach from a rule (loxilb POST semantics).

        oper=0: create; on an existing key an identical body is 409 "lbrule-exists error",
        another body updates in place (kept endpoints keep their index), an empty endpoint list
        deletes the rule. oper=1 adds/reweights the listed endpoints, oper=2 removes them.
        """
        self._add(entry, save=True)

    def _add(self, entry: LoadBalancerEntry, *, save: bool) -> None:
        spec = validate(entry, supported_modes=self._modes, supported_protocols=self._protocols)
        with self._lock:
            old = self._rules.get(spec.key)
            if spec.oper != Oper.CREATE and not spec.endpoints:
                raise InvalidInput(f"no endpoints to {spec.oper.name.lower()}")
            if spec.oper == Oper.ATTACH and old is not None:
                merged = {ep.identity: ep for ep in old.spec.endpoints}
                merged.update({ep.identity: ep for ep in spec.endpoints})
                spec = with_endpoints(old.spec, tuple(merged.values()))
            elif spec.oper == Oper.DETACH:
                if old is None:
                    raise NotFound(f"no such rule {spec.key}")
                gone = {ep.identity for ep in spec.endpoints}
                kept = tuple(ep for ep in old.spec.endpoints if ep.identity not in gone)
                if len(kept) == len(old.spec.endpoints):
                    raise NotFound(f"rule {spec.key} has none of these endpoints")
                spec = with_endpoints(old.spec, kept)

            if old is None:
                if not spec.endpoints:
                    raise InvalidInput("rule needs at least one endpoint")
                self._create(spec, save=save)
            elif not spec.endpoints:
                self._commit(old, None, save=save)  # loxilb: empty update deletes the rule
            else:
                self._update(old, spec, save=save)

    def _snat(self, spec: RuleSpec) -> Callable[[str], str | None]:
        """SNAT address function for `spec`, checked for every endpoint (400 if onearm has
        no local address toward one) before anything changes."""
        if spec.mode == NatMode.ONEARM:
            for ep in spec.endpoints:
                if self._snat_source is None or self._snat_source(ep.ip) is None:
                    raise InvalidInput(f"no local address toward {ep.ip}")
        return snat_planner(spec, self._snat_source)

    def _check_overlap(self, spec: RuleSpec) -> None:
        k = spec.key
        near: set[RuleKey] = set()
        for addr in {k.vip, spec.dp_vip}:
            near |= self._by_addr.get((k.protocol, k.block, addr), set())
        for o in sorted(near, key=str):
            if o != k and o.port <= k.last_port and k.port <= o.last_port:
                raise Conflict(f"lbrule-exists error: {k} overlaps {o}")

    def _addresses(self, rule: Rule) -> set[tuple[str, int, str]]:
        k = rule.spec.key
        return {(k.protocol, k.block, k.vip), (k.protocol, k.block, rule.spec.dp_vip)}

    def _put(self, rule: Rule) -> None:
        """Insert or replace a rule in the table (and the address index)."""
        key = rule.spec.key
        if key in self._rules:
            self._unindex(self._rules[key])
        self._rules[key] = rule
        for addr in self._addresses(rule):
            self._by_addr.setdefault(addr, set()).add(key)

    def _unindex(self, rule: Rule) -> None:
        for addr in self._addresses(rule):
            keys = self._by_addr.get(addr)
            if keys is not None:
                keys.discard(rule.spec.key)
                if not keys:
                    del self._by_addr[addr]

    def _drop(self, key: RuleKey) -> None:
        self._unindex(self._rules.pop(key))

    def _create(self, spec: RuleSpec, *, save: bool) -> None:
        if len(self._rules) >= self._max_rules:
            raise CapacityExceeded(f"lb rule limit {self._max_rules} reached")
        self._check_overlap(spec)
        snat = self._snat(spec)
        sid = self._ids.alloc()
        eps = plan_endpoints((), spec.endpoints, snat)
        new = Rule(spec, sid, eps, build_program(spec, sid, eps), next(self._created))
        self._commit(None, new, save=save)

    def _update(self, old: Rule, spec: RuleSpec, *, save: bool) -> None:
        if spec.entry == old.spec.entry:
            raise Conflict(f"lbrule-exists error: {spec.key}")
        if spec.entry.secondary_ips != old.spec.entry.secondary_ips:
            raise InvalidInput("secondaryIPs of an existing rule cannot be modified")
        self._check_overlap(spec)  # privateIP may have changed
        snat = self._snat(spec)
        eps = plan_endpoints(old.eps, spec.endpoints, snat)
        new = replace(old, spec=spec, eps=eps, program=build_program(spec, old.svc_id, eps))
        self._commit(old, new, save=save)

    def _commit(self, old: Rule | None, new: Rule | None, *, save: bool) -> None:
        """Swap `old` for `new` in the table and the datapath, then persist; all or nothing."""
        assert old is not None or new is not None
        key = (new or old).spec.key  # type: ignore[union-attr]
        if new is not None:
            self._put(new)
        else:
            self._drop(key)
        try:
            if new is not None:
                self._dp.install_service(new.program)
            else:
                self._dp.remove_service(old.program)  # type: ignore[union-attr]
        except Exception as exc:
            self._undo(key, old, new)
            raise _datapath_error(exc) from exc
        if save and self._store is not None:
            try:
                self._store.save(self._entries())
            except Exception as exc:
                self._undo(key, old, new)
                raise PyloxiError(500, f"cannot persist rules: {exc}") from exc
        if new is None:
            self._ids.free(old.svc_id)  # type: ignore[union-attr]

    def _undo(self, key: RuleKey, old: Rule | None, new: Rule | None) -> None:
        """Put the table back as it was before `_commit`, then the datapath (best effort)."""
        if new is None:
            self._put(old)  # type: ignore[arg-type]
            # a re-inserted rule lands last; restore creation order (rare path, O(n log n))
            self._rules = dict(sorted(self._rules.items(), key=lambda kv: kv[1].created))
        elif old is not None:
            self._put(old)
        else:
            self._drop(key)
            self._ids.free(new.svc_id)
        self._undo_datapath(old, new)

    def _undo_datapath(self, old: Rule | None, new: Rule | None) -> None:
        # A failed install may have left part of `new` behind; a failed remove part of `old`.
        try:
            if old is not None:
                self._dp.install_service(old.program)
            elif new is not None:
                self._dp.remove_service(new.program)
        except Exception:  # best effort: the original error is what the caller needs
            log.exception("datapath rollback failed")

    def delete_rule(
        self,
        vip: str,
        port: int,
        protocol: str,
        *,
        port_max: int = 0,
        block: int = 0,
        host: str = "",
    ) -> None:
        """Delete one rule by its key (portMax equal to port is the same as 0). 404 if absent."""
        key = parse_key(vip, port, protocol, port_max, block, host)
        with self._lock:
            old = self._rules.get(key)
            if old is None:
                raise NotFound(f"no such rule {key}")
            self._commit(old, None, save=True)

    def delete_by_name(self, name: str) -> int:
        """Delete every rule named `name`; return how many. 404 if none."""
        with self._lock:
            victims = [
                r for r in self._rules.values() if r.spec.entry.service_arguments.name == name
            ]
            if not victims:
                raise NotFound(f"no rule named {name!r}")
            return self._delete_many(victims)

    def delete_all(self) -> int:
        with self._lock:
            return self._delete_many(list(self._rules.values()))

    def _delete_many(self, victims: list[Rule]) -> int:
        """Delete rules one by one (each all-or-nothing in the datapath), persist once.
        Stops at the first datapath failure, keeping (and persisting) what was deleted."""
        done = 0
        failure: PyloxiError | None = None
        for rule in victims:
            try:
                self._commit(rule, None, save=False)
            except PyloxiError as exc:
                failure = exc
                break
            done += 1
        if done and self._store is not None:
            try:
                self._store.save(self._entries())
            except Exception as exc:
                # Table and datapath agree; the next successful save brings the file in line.
                raise PyloxiError(500, f"deleted {done} rules but cannot persist: {exc}") from exc
        if failure is not None:
            raise PyloxiError(failure.code, f"deleted {done} rules, then: {failure.message}")
        return done

    def restore(self, entries: list[LoadBalancerEntry]) -> list[str]:
        """Re-apply persisted rules at start. Returns one message per rule that failed; never
        raises and never writes the store (a failed rule stays in the file)."""
        errors: list[str] = []
        for entry in entries:
            try:
                self._add(entry, save=False)
            except PyloxiError as exc:
                errors.append(f"{_describe(entry)}: {exc.message}")
            except Exception as exc:  # a broken datapath must not stop the others
                errors.append(f"{_describe(entry)}: {exc}")
        return errors

    # ---------------------------------------------------------------- liveness

    def set_endpoint_state(
        self, ip: str, *, port: int | None = None, protocol: str | None = None, up: bool
    ) -> list[int]:
        """Record a liveness verdict for endpoint `ip` (optionally only its `port` = targetPort
        and rule `protocol`; "ping" means icmp) in every rule that has it, monitor or not.

        Down endpoints stay at their index but leave the selection tables; existing flows are the
        datapath's business. Returns the svc_ids of the services that were reprogrammed (those
        where some matching endpoint actually changed state). If reprogramming one service
        fails, that service keeps its old state, the others are still updated, and a 500 is
        raised at the end.
        """
        try:
            ip = str(ipaddress.ip_address(ip.strip()))
        except ValueError:
            raise InvalidInput(f"malformed endpoint IP {ip!r}") from None
        proto = protocol.strip().lower() if protocol else None
        if proto == "ping":
            proto = "icmp"
        changed: list[int] = []
        failures: list[str] = []
        with self._lock:
            for key, rule in list(self._rules.items()):
                if proto is not None and key.protocol != proto:
                    continue
                eps = tuple(
                    replace(ep, down=not up)
                    if ep.ip == ip and (port is None or ep.target_port == port) and ep.down == up
                    else ep
                    for ep in rule.eps
                )
                if eps == rule.eps:
                    continue
                new = replace(rule, eps=eps, program=build_program(rule.spec, rule.svc_id, eps))
                if new.program == rule.program:  # only holes changed: nothing to reinstall
                    self._put(new)
                    continue
                try:
                    self._commit(rule, new, save=False)
                except PyloxiError as exc:
                    failures.append(f"{key}: {exc.message}")
                    continue
                changed.append(rule.svc_id)
        if failures:
            raise PyloxiError(500, "endpoint state not applied to " + "; ".join(failures))
        return changed

    # ---------------------------------------------------------------- reads

    def list_rules(self) -> list[LoadBalancerEntry]:
        """Current rules in creation order. Endpoints are listed as posted (holes hidden), each
        with state "active"/"inactive" (inactive = liveness down) and counter "<pkts>:<bytes>"."""
        with self._lock:
            rules = list(self._rules.values())
        out: list[LoadBalancerEntry] = []
        for rule in rules:
            try:
                counters = self._dp.service_counters(rule.program).endpoints
            except Exception as exc:
                raise _datapath_error(exc) from exc
            index = {ep.identity: i for i, ep in enumerate(rule.eps) if not ep.removed}
            shown: list[Endpoint] = []
            for spec_ep in rule.spec.endpoints:
                i = index[spec_ep.identity]
                c = counters[i] if i < len(counters) else None
                shown.append(
                    Endpoint(
                        endpoint_ip=spec_ep.ip,
                        target_port=spec_ep.target_port,
                        weight=spec_ep.weight,
                        state="active" if rule.eps[i].active else "inactive",
                        counter=f"{c.packets}:{c.bytes}" if c else "0:0",
                    )
                )
            out.append(rule.spec.entry.model_copy(update={"endpoints": shown}, deep=True))
        return out

    def _entries(self) -> list[LoadBalancerEntry]:
        """The stored entries themselves, for the store (which only reads them): copying 10,000
        rules on every change would make a bulk create quadratic."""
        with self._lock:
            return [r.spec.entry for r in self._rules.values()]

    def desired_rules(self) -> list[LoadBalancerEntry]:
        """The rules as posted (canonical form, no output fields), for persistence/export."""
        with self._lock:
            return [r.spec.entry.model_copy(deep=True) for r in self._rules.values()]

    def programs(self) -> list[ServiceProgram]:
        """What the datapath should hold now (for reconciliation and debugging)."""
        with self._lock:
            return [r.program for r in self._rules.values()]

    def conntrack(self) -> list[ConntrackEntry]:
        """Every tracked flow in loxilb's strings (see engine.conntrack)."""
        with self._lock:
            by_id = {r.svc_id: r.program for r in self._rules.values()}
        return [to_entry(by_id.get(f.svc_id), f) for f in self._dp.flows()]

    def age(self) -> int:
        """Expire idle flows in the datapath; return how many. Not under the engine lock: aging
        can take a while and does not touch the rule table."""
        return self._dp.age_flows()


def _describe(entry: LoadBalancerEntry) -> str:
    a = entry.service_arguments
    ports = f"{a.port}-{a.port_max}" if a.port_max else str(a.port)
    return f"{a.external_ip}:{ports}/{a.protocol}" + (f" ({a.name})" if a.name else "")


__all__ = ["Engine", "EpState", "RuleStore"]
