"""In-process Datapath for engine and API unit tests. Never evidence that a feature works:
it only records what the engine asked for (see DESIGN.md, testing rules)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pyloxi.engine.firewall import FwRuleProgram
from pyloxi.engine.mirror import MirrorProgram
from pyloxi.engine.policer import PolicerProgram
from pyloxi.engine.program import Flow, ServiceCounters, ServiceProgram

# States the fake treats as finished when asked to age flows.
_FINISHED = frozenset({"closed", "fini", "closed-wait", "abort", "shut-complete"})


@dataclass
class MemoryDatapath:
    """Honours the Datapath protocol in memory.

    Tests inspect `services` (svc_id → installed program) and `calls` (("install"|"remove",
    svc_id) in order), set `counters[svc_id]` and `flow_table`, and set `fail_next` to make
    the next install/remove raise that exception (once) without changing anything.
    `age_flows` drops flows in a finished state (or of services no longer installed).
    `stats` stands for the datapath's event counters (datapath_stats), set by tests.
    """

    services: dict[int, ServiceProgram] = field(default_factory=dict)
    counters: dict[int, ServiceCounters] = field(default_factory=dict)
    flow_table: list[Flow] = field(default_factory=list)
    calls: list[tuple[str, int]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    conntrack_capacity: int = 65536
    fail_next: Exception | None = None
    closed: bool = False
    firewall: list[FwRuleProgram] = field(default_factory=list)  # set_firewall's last list
    mirrors: list[MirrorProgram] = field(default_factory=list)  # set_mirrors' last list
    mirr_counters: dict[int, tuple[int, int]] = field(default_factory=dict)  # set by tests
    interfaces: frozenset[str] | None = None  # known interface names; None: any name exists
    fw_counters: dict[int, tuple[int, int]] = field(default_factory=dict)  # set by tests
    policers: dict[int, PolicerProgram] = field(default_factory=dict)  # by policer id
    attached: tuple[str, ...] = ("eth0", "eth1")  # interfaces a port policer may target
    pol_counters: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)  # tests

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def install_service(self, prog: ServiceProgram) -> None:
        self._maybe_fail()
        self.calls.append(("install", prog.svc_id))
        self.services[prog.svc_id] = prog

    def remove_service(self, prog: ServiceProgram) -> None:
        self._maybe_fail()
        self.calls.append(("remove", prog.svc_id))
        self.services.pop(prog.svc_id, None)
        self.counters.pop(prog.svc_id, None)
        self.flow_table = [f for f in self.flow_table if f.svc_id != prog.svc_id]

    def service_counters(self, prog: ServiceProgram) -> ServiceCounters:
        return self.counters.get(prog.svc_id, ServiceCounters())

    def services_counters(self, progs: Iterable[ServiceProgram]) -> dict[int, ServiceCounters]:
        return {p.svc_id: self.service_counters(p) for p in progs if p.svc_id in self.services}

    def datapath_stats(self) -> dict[str, int]:
        return dict(self.stats)

    def conntrack_summary(self) -> dict[tuple[int, str], int]:
        return dict(Counter((f.proto, f.state) for f in self.flow_table))

    def flows(self) -> list[Flow]:
        return list(self.flow_table)

    def age_flows(self) -> int:
        keep = [
            f for f in self.flow_table if f.state not in _FINISHED and f.svc_id in self.services
        ]
        aged = len(self.flow_table) - len(keep)
        self.flow_table = keep
        return aged

    def close(self) -> None:
        self.closed = True

    def set_firewall(self, rules: Sequence[FwRuleProgram]) -> None:
        self._maybe_fail()
        for r in rules:  # as the eBPF backend: an interface that does not exist
            for name in (r.ifname, r.redirect):
                if name and self.interfaces is not None and name not in self.interfaces:
                    raise ValueError(f"no interface named {name!r}")
        self.firewall = list(rules)

    def set_mirrors(self, mirrors: Sequence[MirrorProgram]) -> None:
        self._maybe_fail()
        for m in mirrors:  # as the eBPF backend: an interface that does not exist
            for name in (m.port, *(() if m.on_rule else (m.target,))):
                if self.interfaces is not None and name not in self.interfaces:
                    raise ValueError(f"no interface named {name!r}")
        self.mirrors = list(mirrors)

    def mirror_counters(self) -> dict[int, tuple[int, int]]:
        return {m.slot: self.mirr_counters.get(m.slot, (0, 0)) for m in self.mirrors}

    def firewall_counters(self) -> dict[int, tuple[int, int]]:
        return {r.id: self.fw_counters.get(r.id, (0, 0)) for r in self.firewall}

    def set_policer(self, pol: PolicerProgram) -> None:
        self._maybe_fail()
        if pol.port and pol.port not in self.attached:
            raise ValueError(f"interface {pol.port!r} is not one the datapath is attached to")
        self.policers[pol.id] = pol

    def remove_policer(self, pol_id: int) -> None:
        self.policers.pop(pol_id, None)

    def policer_counters(self) -> dict[int, tuple[int, int, int, int]]:
        return {i: self.pol_counters.get(i, (0, 0, 0, 0)) for i in self.policers}
