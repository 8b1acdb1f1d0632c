"""The engine: the rule table, and the only place that decides what the datapath holds.

Every mutation follows one pattern: under the lock, validate completely (400, nothing touched) →
compute the new immutable `Rule` → swap it into the table → tell the datapath → submit the change
to the store; then, outside the lock, wait until the store says it is durable. Waiting outside the
lock lets concurrent requests share one disk flush (group commit). If the datapath fails, that
change is put back at once; if the store fails, every change from the failed write on (later
ones were computed on top of it) is undone newest first, in table and datapath, and each waiting
caller gets a PyloxiError. So memory, maps and disk agree, and an answered change is on disk.

Decisions where loxilb is silent or quirky (all documented at the place they are made):
- Rules overlap when they share VIP (or privateIP), protocol and block and their port ranges
  intersect; `host` does not separate rules because the L4 datapath cannot tell hosts apart.
- oper=attach on a missing rule creates it; attach/detach keep the installed rule's arguments
  and only change its endpoints. Detach of endpoints none of which are in the rule → 404.
- Liveness verdicts (`set_endpoint_state`) apply to every rule holding a matching endpoint,
  whether or not it has `monitor` on: a prober only reports hosts something asked it to watch,
  and sending flows to a host known to be down helps nobody.
- `restore` never writes the store: a rule that fails at boot (e.g. no local address yet for
  onearm) stays persisted and "parked", is retried (`retry_parked`) and can be deleted.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pyloxi.engine.conntrack import to_entry
from pyloxi.engine.program import MAX_SERVICES, Datapath, ServiceProgram, datapath_modes
from pyloxi.engine.rules import (
    EpState,
    InstanceSource,
    Rule,
    build_program,
    needs_local_source,
    plan_endpoints,
    snat_planner,
)
from pyloxi.engine.storage import (
    Commit,
    Delete,
    Put,
    RuleStore,
    StoreFailure,
    StoreOp,
    entry_store_key,
    store_key,
)
from pyloxi.engine.svc_ids import SvcIds
from pyloxi.engine.validate import (
    RuleKey,
    RuleSpec,
    family,
    parse_key,
    validate,
    with_endpoints,
)
from pyloxi.model.conntrack import ConntrackEntry
from pyloxi.model.errors import CapacityExceeded, Conflict, InvalidInput, NotFound, PyloxiError
from pyloxi.model.lb import Endpoint, LoadBalancerEntry, NatMode, Oper

log = logging.getLogger(__name__)

# How long the event loop's `begin_add` / `settle(blocking=False)` wait for a busy engine lock
# before handing the change to a worker thread. The usual holder is such a worker, or the
# follower draining the change log: a few hundred microseconds of work, but work that needs
# the GIL, which the loop holds. Not waiting (the first version) made every create of that
# loop turn take the thread path too, whose worker then held the lock for the next turn: a
# cascade that sent 58 % of the creates of a 16-client run through threads (25 context
# switches and 0.9 ms of CPU per create). Waiting drops the GIL until the holder is done; a
# long holder (a bulk delete, a liveness round) still costs the loop at most this much.
LOOP_LOCK_WAIT_S = 0.002


@dataclass(slots=True)
class _Change:
    """One applied change, enough to undo it: the table went from `old` to `new` under `key`;
    `parked` is the not-yet-applied persisted rule this change replaced (see `restore`)."""

    skey: str
    key: RuleKey | None
    old: Rule | None
    new: Rule | None
    parked: LoadBalancerEntry | None = None

    def op(self) -> StoreOp:
        return Put(self.skey, self.new.spec.entry) if self.new is not None else Delete(self.skey)


@dataclass(slots=True)
class _Pending:
    seq: int
    changes: list[_Change]
    commit: Commit


class Staged:
    """A change `Engine.begin_add` applied, on its way to disk."""

    __slots__ = ("pending",)

    def __init__(self, pending: _Pending | None) -> None:
        self.pending = pending

    def when_durable(self, callback: Callable[[], None]) -> bool:
        """Have `callback` called (from the store's thread, or at once) when the store has
        settled the change; False if this store cannot call back (then `settle` in a
        thread). Either way `Engine.settle` tells the outcome."""
        if self.pending is None:
            callback()
            return True
        add = getattr(self.pending.commit, "add_done_callback", None)
        if add is None:
            return False
        add(callback)
        return True


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
        on_change: Callable[[], None] | None = None,
        snat_source: Callable[[str], str | None] | None = None,
        instance_ip: InstanceSource | None = None,
        supported_modes: frozenset[NatMode] | None = None,  # None: the datapath's
        supported_protocols: frozenset[str] = frozenset({"tcp", "udp", "icmp", "sctp"}),
        max_rules: int = MAX_SERVICES - 1,
        delete_chunk: int = 64,
    ) -> None:
        if not 0 <= max_rules <= MAX_SERVICES - 1:
            raise ValueError(f"max_rules must be in 0..{MAX_SERVICES - 1}")
        self._dp = datapath
        self._store = store
        self._on_change = on_change
        self._snat_source = snat_source
        self._instance_ip = instance_ip
        self._modes = supported_modes if supported_modes is not None else datapath_modes(datapath)
        self._protocols = supported_protocols
        self._max_rules = max_rules
        self._chunk = max(1, delete_chunk)
        self._rules: dict[RuleKey, Rule] = {}
        # (protocol, block, address) -> keys of rules matching that VIP or privateIP: keeps the
        # overlap check O(rules on that address) instead of O(all rules).
        self._by_addr: dict[tuple[str, int, str], set[RuleKey]] = {}
        self._ids = SvcIds()
        self._created = itertools.count(1)
        self._lock = threading.RLock()
        # Changes applied to table and datapath but not yet durable, by submission seq: what
        # a store failure undoes (newest first).
        self._journal: dict[int, _Pending] = {}
        self._rolled_back = 0  # highest StoreFailure.from_seq already undone
        # Persisted rules that did not apply (at boot): kept in the store, retried, listed in
        # no table. store key -> entry.
        self._parked: dict[str, LoadBalancerEntry] = {}
        # Entries that entered (True) or left (False) the table since the last
        # `drain_changes()`, in order, so a follower sees only what changed instead of diffing
        # the whole table on each change (O(rules) per create). None: too many undrained
        # (nobody drains, or a bulk change): the next drain says "resync from entries()".
        self._deltas: list[tuple[LoadBalancerEntry, bool]] | None = []

    # ---------------------------------------------------------------- rule changes

    def add_rule(self, entry: LoadBalancerEntry) -> None:
        """Create, update in place, attach to or detach from a rule (loxilb POST semantics).

        oper=0: create; on an existing key an identical body is 409 "lbrule-exists error",
        another body updates in place (kept endpoints keep their index), an empty endpoint list
        deletes the rule. oper=1 adds/reweights the listed endpoints, oper=2 removes them.
        Returns once the change is durable in the store; if it cannot be, it is undone (table
        and datapath) and a 500 is raised. Blocks: call it from a worker thread.
        """
        self._settle(self._add(entry, persist=True))

    def begin_add(self, entry: LoadBalancerEntry) -> Staged | None:
        """`add_rule` for a caller that must not block (the API's event loop): the change is
        validated and applied, and handed to the store, as add_rule does; None (nothing done)
        when someone else holds the engine lock for longer than LOOP_LOCK_WAIT_S, then call
        `add_rule` from a thread.
        Raises what add_rule raises before the store. The caller then waits for
        `Staged.when_durable` and calls `settle` (the answer may be sent only after that)."""
        if not self._lock.acquire(timeout=LOOP_LOCK_WAIT_S):
            return None
        try:
            return Staged(self._add(entry, persist=True))
        finally:
            self._lock.release()

    def begin_add_many(
        self, entries: Sequence[LoadBalancerEntry]
    ) -> tuple[Staged, list[Exception | None]] | None:
        """`begin_add` for the creates that arrived together (one event-loop turn): one lock,
        each applied in order as if sent one after the other (a duplicate sees the rule its
        predecessor created), and the ones applied handed to the store as one submission. A
        create that fails gets its own error in the list (None: applied) and changes nothing;
        the others are applied all the same. None (nothing done) when the lock is busy (see
        `begin_add`). The staged change is all the applied ones: settled together, and a
        store failure undoes them all (every one of them is then answered with the 500)."""
        specs: list[RuleSpec | Exception] = []
        for entry in entries:
            try:
                specs.append(validate(entry, supported_modes=self._modes,
                                      supported_protocols=self._protocols))
            except Exception as exc:  # noqa: BLE001 - that create's own answer
                specs.append(exc)
        if not self._lock.acquire(timeout=LOOP_LOCK_WAIT_S):
            return None
        try:
            changes: list[_Change] = []
            errors: list[Exception | None] = []
            for spec in specs:
                if isinstance(spec, Exception):
                    errors.append(spec)
                    continue
                try:
                    change = self._apply(spec)
                except Exception as exc:  # noqa: BLE001 - nothing of it applied
                    errors.append(exc)
                    continue
                change.parked = self._parked.pop(change.skey, None)
                changes.append(change)
                errors.append(None)
            try:
                pending = self._stage(changes)
            except PyloxiError as exc:  # not submitted: all of them were undone
                errors = [exc if e is None else e for e in errors]
                pending = None
            return Staged(pending), errors
        finally:
            self._lock.release()

    def settle(self, staged: Staged, *, blocking: bool = True) -> bool:
        """Second half of `begin_add`: wait until the change is durable (see `_settle`; a
        store failure undoes it and raises a 500). With blocking=False, for a change whose
        commit has resolved: False, with nothing done, when that needs to block (the lock is
        busy for longer than LOOP_LOCK_WAIT_S, or the store failed), then call it again from
        a thread."""
        return self._settle(staged.pending, blocking=blocking)

    def _add(self, entry: LoadBalancerEntry, *, persist: bool) -> _Pending | None:
        spec = validate(entry, supported_modes=self._modes, supported_protocols=self._protocols)
        with self._lock:
            change = self._apply(spec)
            if not persist:
                self._finish([change])
                self._changed()
                return None
            # A posted rule takes the place of a persisted one that never applied.
            change.parked = self._parked.pop(change.skey, None)
            return self._stage([change])

    def _apply(self, spec: RuleSpec) -> _Change:
        """Under the lock: apply one validated POST to table and datapath, all or nothing
        (an error changes nothing); persisting it is the caller's next step."""
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
            change = self._create(spec)
        elif not spec.endpoints:
            change = self._commit(old, None)  # loxilb: empty update deletes the rule
        else:
            change = self._update(old, spec)
        return change

    def _snat(self, spec: RuleSpec) -> Callable[[str], str | None]:
        """SNAT address function for `spec`, checked for every endpoint before anything
        changes: 400 if an endpoint that needs the LB's own address (onearm, NAT64) has no
        local address of its family toward it."""
        for ep in spec.endpoints:
            if not needs_local_source(spec, ep.ip):
                continue
            src = self._snat_source(ep.ip) if self._snat_source is not None else None
            if src is None:
                raise InvalidInput(f"no local address toward {ep.ip}")
            if family(src) != family(ep.ip):  # a broken source callback: never a NAT64 packet
                raise InvalidInput(f"no local IPv{family(ep.ip)} address toward {ep.ip} "
                                   f"(got {src})")
        return snat_planner(spec, self._snat_source, self._instance_ip)

    def replan_snat(self) -> int:
        """The instance IPs changed: fullnat and onearm rules get their new SNAT source (new
        flows only; a flow keeps the source it was opened with). Not persisted: the rules did
        not change. Returns how many rules were reprogrammed; a rule the datapath refuses keeps
        its old source (logged)."""
        done = 0
        with self._lock:
            for key, rule in list(self._rules.items()):
                if rule.spec.mode not in (NatMode.FULLNAT, NatMode.ONEARM):
                    continue
                plan = snat_planner(rule.spec, self._snat_source, self._instance_ip)
                eps = tuple(ep if ep.removed or (rule.spec.mode == NatMode.FULLNAT
                                                 and needs_local_source(rule.spec, ep.ip))
                            else replace(ep, snat_ip=plan(ep.ip)) for ep in rule.eps)
                if eps == rule.eps:
                    continue
                new = replace(rule, eps=eps, program=build_program(rule.spec, rule.svc_id, eps))
                try:
                    self._commit(rule, new)
                except PyloxiError as exc:
                    log.error("rule %s: new SNAT source not applied: %s", key, exc.message)
                    continue
                done += 1
        return done

    def _check_overlap(self, spec: RuleSpec) -> None:
        k = spec.key
        near: set[RuleKey] = set()
        for addr in {k.vip, spec.dp_vip, *spec.secondary_vips}:
            near |= self._by_addr.get((k.protocol, k.block, addr), set())
        for o in sorted(near, key=str):
            if o != k and o.port <= k.last_port and k.port <= o.last_port:
                raise Conflict(f"lbrule-exists error: {k} overlaps {o}")

    def _addresses(self, rule: Rule) -> set[tuple[str, int, str]]:
        k = rule.spec.key
        return {(k.protocol, k.block, a)
                for a in (k.vip, rule.spec.dp_vip, *rule.spec.secondary_vips)}

    def _put(self, rule: Rule) -> None:
        """Insert or replace a rule in the table (and the address index)."""
        key = rule.spec.key
        old = self._rules.get(key)
        if old is not None:
            self._unindex(old)
        self._rules[key] = rule
        for addr in self._addresses(rule):
            self._by_addr.setdefault(addr, set()).add(key)
        if old is None or old.spec.entry is not rule.spec.entry:
            if old is not None:
                self._delta(old.spec.entry, False)
            self._delta(rule.spec.entry, True)

    def _unindex(self, rule: Rule) -> None:
        for addr in self._addresses(rule):
            keys = self._by_addr.get(addr)
            if keys is not None:
                keys.discard(rule.spec.key)
                if not keys:
                    del self._by_addr[addr]

    def _drop(self, key: RuleKey) -> None:
        rule = self._rules.pop(key)
        self._unindex(rule)
        self._delta(rule.spec.entry, False)

    def _delta(self, entry: LoadBalancerEntry, present: bool) -> None:
        if self._deltas is None:
            return
        self._deltas.append((entry, present))
        if len(self._deltas) > max(1024, len(self._rules)):  # a resync is cheaper now
            self._deltas = None

    def drain_changes(self) -> list[tuple[LoadBalancerEntry, bool]] | None:
        """The entries that entered (True) or left (False) the table since the last call, in
        order (the entry objects themselves: a changed rule is a new object), or None when
        too many piled up: then read `entries()` whole. Either way the log starts afresh.
        A follower should drain first and read `entries()` after, when it reads both."""
        with self._lock:
            out, self._deltas = self._deltas, []
        return out

    def _create(self, spec: RuleSpec) -> _Change:
        if len(self._rules) >= self._max_rules:
            raise CapacityExceeded(f"lb rule limit {self._max_rules} reached")
        self._check_overlap(spec)
        snat = self._snat(spec)
        sid = self._ids.alloc()
        eps = plan_endpoints((), spec.endpoints, snat)
        new = Rule(spec, sid, eps, build_program(spec, sid, eps), next(self._created))
        return self._commit(None, new)

    def _update(self, old: Rule, spec: RuleSpec) -> _Change:
        if spec.entry == old.spec.entry:
            raise Conflict(f"lbrule-exists error: {spec.key}")
        if spec.entry.secondary_ips != old.spec.entry.secondary_ips:
            raise InvalidInput("secondaryIPs of an existing rule cannot be modified")
        self._check_overlap(spec)  # privateIP may have changed
        snat = self._snat(spec)
        eps = plan_endpoints(old.eps, spec.endpoints, snat)
        new = replace(old, spec=spec, eps=eps, program=build_program(spec, old.svc_id, eps))
        return self._commit(old, new)

    def _commit(self, old: Rule | None, new: Rule | None) -> _Change:
        """Swap `old` for `new` in the table and the datapath, all or nothing. Persisting is
        the caller's next step (`_stage`), so a batch of changes can share one store write."""
        assert old is not None or new is not None
        key = (new or old).spec.key  # type: ignore[union-attr]
        change = _Change(store_key(key), key, old, new)
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
            self._undo(change)
            if old is not None and new is None:
                self._reorder()
            raise _datapath_error(exc) from exc
        return change

    def _finish(self, changes: list[_Change]) -> None:
        """The changes are final: a deleted rule's service id may now be reused. (Freed only
        now so that undoing a delete can never collide with a rule created meanwhile.)"""
        for ch in changes:
            if ch.new is None and ch.old is not None:
                self._ids.free(ch.old.svc_id)

    def _changed(self) -> None:
        """Tell the follower (VIPs, probes) the table changed; it reads `entries()` when it gets
        to it (building the O(rules) list on every change made bulk creates quadratic)."""
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # a follower must never fail a rule change
                log.exception("rule change listener failed")

    def _stage(self, changes: list[_Change]) -> _Pending | None:
        """Under the lock: hand the changes to the store (non-blocking, in lock order)."""
        if not changes:
            return None
        self._changed()
        if self._store is None:
            self._finish(changes)
            return None
        try:
            commit = self._store.submit([ch.op() for ch in changes])
        except Exception as exc:
            self._undo_all(changes)
            raise PyloxiError(500, f"cannot persist rules: {exc}; the change was undone") from exc
        pending = _Pending(commit.seq, changes, commit)
        self._journal[commit.seq] = pending
        return pending

    def _settle(self, pending: _Pending | None, *, blocking: bool = True) -> bool:
        """Outside the lock: wait until `pending` is durable. If the store failed, undo every
        change from the failed batch on (they were computed on top of each other), newest
        first, and raise a 500. blocking=False (the commit has resolved): False, nothing
        done, if that needs the lock while it is busy (LOOP_LOCK_WAIT_S), or a rollback."""
        if pending is None:
            return True
        try:
            pending.commit.wait()
        except StoreFailure as exc:
            if not blocking:
                return False
            with self._lock:
                self._rollback(exc.from_seq)
            raise PyloxiError(500, f"{exc.message}; the change was undone") from exc
        if not self._lock.acquire(timeout=-1 if blocking else LOOP_LOCK_WAIT_S):
            return False
        try:
            if self._journal.pop(pending.seq, None) is not None:
                self._finish(pending.changes)
        finally:
            self._lock.release()
        return True

    def _rollback(self, from_seq: int) -> None:
        """Under the lock: undo what the store lost (once per failure, whichever waiter
        comes first), then let the store take submissions again."""
        if from_seq <= self._rolled_back:
            return
        self._rolled_back = from_seq
        lost = [p for seq, p in self._journal.items() if seq >= from_seq]
        for p in reversed(lost):
            del self._journal[p.seq]
            self._undo_all(p.changes, reorder=False)
        self._reorder()
        log.warning("store failed: undid %d changes (from submission %d on)",
                    sum(len(p.changes) for p in lost), from_seq)
        assert self._store is not None
        self._store.resume(from_seq)
        self._changed()

    def _undo_all(self, changes: list[_Change], *, reorder: bool = True) -> None:
        for ch in reversed(changes):
            self._undo(ch)
            if ch.parked is not None:
                self._parked[ch.skey] = ch.parked
        if reorder:
            self._reorder()

    def _reorder(self) -> None:
        # A re-inserted (undeleted) rule lands last; restore creation order (rare path).
        self._rules = dict(sorted(self._rules.items(), key=lambda kv: kv[1].created))

    def _undo(self, ch: _Change) -> None:
        """Put the table back as it was before `ch`, then the datapath (best effort)."""
        old, new, key = ch.old, ch.new, ch.key
        if key is None:
            return  # a store-only change (a parked rule deleted)
        current = self._rules.get(key)
        if old is not None:
            self._put(old)
        elif new is not None:
            self._drop(key)
            self._ids.free(new.svc_id)
        # A failed install may have left part of `new` behind; a failed remove part of `old`.
        # Liveness may have reprogrammed `new` since: remove what is installed now.
        try:
            if old is not None:
                self._dp.install_service(old.program)
            elif new is not None:
                self._dp.remove_service((current or new).program)
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
        skey = store_key(key)
        with self._lock:
            old = self._rules.get(key)
            if old is not None:
                pending = self._stage([self._commit(old, None)])
            elif skey in self._parked:
                entry = self._parked.pop(skey)
                pending = self._stage([_Change(skey, None, None, None, parked=entry)])
            else:
                raise NotFound(f"no such rule {key}")
        self._settle(pending)

    def delete_by_name(self, name: str) -> int:
        """Delete every rule named `name`; return how many. 404 if none."""

        def named(entry: LoadBalancerEntry) -> bool:
            return entry.service_arguments.name == name

        n = self._delete_where(named)
        if n is None:
            raise NotFound(f"no rule named {name!r}")
        return n

    def delete_all(self) -> int:
        return self._delete_where(lambda _entry: True) or 0

    def _delete_where(self, match: Callable[[LoadBalancerEntry], bool]) -> int | None:
        """Delete the rules (present now) that `match`, `delete_chunk` at a time: each chunk
        under the lock and persisted as one store write, the lock released in between so
        other requests are served during a long bulk delete. Each rule is all-or-nothing in
        the datapath; a failure stops the bulk delete, keeping what was deleted. Returns how
        many rules were deleted, None if none matched."""
        with self._lock:
            keys = [k for k, r in self._rules.items() if match(r.spec.entry)]
            parked = [k for k, e in self._parked.items() if match(e)]
        if not keys and not parked:
            return None
        done = 0
        i = 0
        while True:
            failure: PyloxiError | None = None
            with self._lock:
                changes: list[_Change] = []
                for skey in parked:  # persisted but never applied: only the store has them
                    entry = self._parked.pop(skey, None)
                    if entry is not None:
                        changes.append(_Change(skey, None, None, None, parked=entry))
                parked = []
                while i < len(keys) and len(changes) < self._chunk:
                    rule = self._rules.get(keys[i])
                    i += 1
                    if rule is None or not match(rule.spec.entry):
                        continue  # changed by another request meanwhile
                    try:
                        changes.append(self._commit(rule, None))
                    except PyloxiError as exc:
                        failure = exc
                        break
                pending = self._stage(changes)
            try:
                self._settle(pending)
            except PyloxiError as exc:
                raise PyloxiError(exc.code, f"deleted {done} rules, then: {exc.message}") from exc
            done += sum(1 for ch in changes if ch.old is not None)
            if failure is not None:
                raise PyloxiError(failure.code, f"deleted {done} rules, then: {failure.message}")
            if i >= len(keys):
                return done

    def restore(
        self, entries: Sequence[LoadBalancerEntry], keys: Sequence[str] | None = None
    ) -> list[str]:
        """Re-apply persisted rules at start. Returns one message per rule that failed; never
        raises and never writes the store. A rule that fails stays persisted and parked:
        `retry_parked` tries it again, a delete (by key, name or all) removes it, a POST of
        the same key replaces it. `keys` are the rules' store keys when the store has them."""
        errors: list[str] = []
        for n, entry in enumerate(entries):
            try:
                self._add(entry, persist=False)
            except Exception as exc:  # a broken datapath must not stop the others
                why = exc.message if isinstance(exc, PyloxiError) else str(exc)
                errors.append(f"{_describe(entry)}: {why}")
                skey = keys[n] if keys is not None else self._store_key_of(entry, n)
                with self._lock:
                    self._parked[skey] = entry
        return errors

    def _store_key_of(self, entry: LoadBalancerEntry, n: int) -> str:
        return entry_store_key(entry) or f"?{n}"  # unparseable: only a delete-all names it

    def parked(self) -> list[LoadBalancerEntry]:
        """Persisted rules not applied yet (see `restore`)."""
        with self._lock:
            return list(self._parked.values())

    def retry_parked(self) -> list[str]:
        """Try the parked rules again; return one message per rule still failing."""
        errors: list[str] = []
        with self._lock:
            todo = list(self._parked.items())
        for skey, entry in todo:
            with self._lock:  # RLock: _add re-enters; holding it keeps the pop exact
                if self._parked.get(skey) is not entry:
                    continue  # replaced or deleted meanwhile
                try:
                    self._add(entry, persist=False)
                except Exception as exc:
                    why = exc.message if isinstance(exc, PyloxiError) else str(exc)
                    errors.append(f"{_describe(entry)}: {why}")
                    continue
                del self._parked[skey]
                log.info("persisted rule %s applied on retry", _describe(entry))
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
                    self._commit(rule, new)  # liveness is not persisted
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

    def entries(self) -> list[LoadBalancerEntry]:
        """The stored entries themselves, for followers that only read them (no copies)."""
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

    def rule_table(self) -> list[Rule]:
        """The installed rules themselves (frozen: spec, endpoint indexes with their liveness,
        program), in creation order, for readers such as metrics that label by them."""
        with self._lock:
            return list(self._rules.values())

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


__all__ = ["Commit", "Delete", "Engine", "EpState", "Put", "RuleStore", "Staged", "StoreFailure",
           "StoreOp", "entry_store_key", "store_key"]
