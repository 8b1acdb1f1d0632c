"""Maglev fingerprints: do the cluster's nodes hash a service's flows to the same endpoints?

In active-active every node takes a share of a VIP's flows (ECMP), and a flow may move between
nodes (a route change, a node leaving). A hash-selected service (sel hash/persist) keeps such a
flow on its endpoint only if every node's Maglev table sends the flow's slot to the same endpoint.
The table is a function of the endpoint identities, weights and liveness only (engine.maglev),
but the nodes' inputs can drift: a rule posted differently on one node, a weight, a probe verdict.

Each node therefore sends, in the peer channel's section "maglev" (about every second),
`{"v": 1, "tables": {service-id: digest}}`: per hash-selected service, its identity (VIP/port/
proto, as conntrack sync names services: never a node-local id) and a short digest of its table
*as programmed*, slot by slot translated from endpoint index (node-local) to "ip:port". A peer's
digest is compared for the services both nodes have; a difference that lasts `grace_s` (2.5 s:
the nodes apply a change an exchange or two apart) is logged (a warning once per change, an info
line when it is resolved), counted, and listed by `mismatches()`.

A payload always carries "v": an empty dict is what the channel delivers for a peer gone silent.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pyloxi.engine.program import ServiceProgram
from pyloxi.model.lb import PROTO_NUMBERS, Selection

log = logging.getLogger(__name__)

SECTION = "maglev"
VERSION = 1
HASHED = frozenset({Selection.HASH, Selection.PERSIST})
# A difference must last this long to count: the nodes apply a change (a rule posted to each,
# a probe verdict agreed on the next exchange) up to an exchange period or two apart.
GRACE_S = 2.5
_PROTO_NAMES = {num: name for name, num in PROTO_NUMBERS.items()}


def service_id(prog: ServiceProgram) -> str:
    """A service's identity across nodes: its datapath VIP, port (range) and protocol."""
    vip = f"[{prog.vip}]" if ":" in prog.vip else prog.vip
    ports = str(prog.port_min) if prog.port_max == prog.port_min else \
        f"{prog.port_min}-{prog.port_max}"
    return f"{vip}:{ports}/{_PROTO_NAMES.get(prog.proto, str(prog.proto))}"


def slot_identities(prog: ServiceProgram) -> list[str]:
    """The programmed table with each slot's endpoint index replaced by its identity "ip:port"
    (indexes are node-local: they depend on the order endpoints came and went)."""
    names = [f"{ep.ip}:{ep.port}" for ep in prog.endpoints]
    return [names[i] for i in prog.slots]


def table_digest(prog: ServiceProgram) -> str:
    """16 hex digits of blake2b over the table as identities (stable across processes)."""
    h = hashlib.blake2b(digest_size=8, person=b"pyloxi-mgl-fp")
    h.update("\n".join(slot_identities(prog)).encode())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Mismatch:
    service: str
    node: int
    local: str
    remote: str


class MaglevFingerprints:
    """This node's digests (`provide`), the peers' (`receive`) and where they differ.

    `programs` returns what the engine has programmed now (Engine.programs). Thread-safe: the
    channel may call from its own thread."""

    def __init__(self, programs: Callable[[], Iterable[ServiceProgram]], *,
                 grace_s: float = GRACE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._programs = programs
        self.grace_s = grace_s
        self._clock = clock
        self._since: dict[Mismatch, float] = {}  # differences seen, not yet confirmed
        self._lock = threading.Lock()
        # svc_id -> (program the digest was made of, digest): a table is 1021+ slots, and
        # programs are immutable, so a digest is recomputed only when the program changes.
        self._cache: dict[int, tuple[ServiceProgram, str]] = {}
        self._remote: dict[int, dict[str, str]] = {}
        self._mismatch: dict[tuple[str, int], Mismatch] = {}
        self.mismatches_seen = 0  # mismatches that began (a changed pair counts again)

    def local(self) -> dict[str, str]:
        out: dict[str, str] = {}
        cache: dict[int, tuple[ServiceProgram, str]] = {}
        for prog in self._programs():
            if prog.sel not in HASHED or not prog.slots:
                continue
            hit = self._cache.get(prog.svc_id)
            digest = hit[1] if hit is not None and hit[0] is prog else table_digest(prog)
            cache[prog.svc_id] = (prog, digest)
            out[service_id(prog)] = digest
        self._cache = cache
        return out

    def provide(self) -> dict[str, object]:
        with self._lock:
            tables = self.local()
            self._compare(tables)  # our tables changed too, not only theirs
        return {"v": VERSION, "tables": tables}

    def receive(self, node: int, payload: Mapping[str, object]) -> None:
        tables = payload.get("tables") if payload.get("v") == VERSION else None
        with self._lock:
            if isinstance(tables, dict):
                self._remote[node] = {str(k): str(v) for k, v in tables.items()}
            else:  # gone (or a version we do not read): nothing to compare with
                self._remote.pop(node, None)
            self._compare(self.local())

    def _compare(self, mine: Mapping[str, str]) -> None:
        now = self._clock()
        seen: dict[Mismatch, float] = {}
        confirmed: dict[tuple[str, int], Mismatch] = {}
        for node, theirs in self._remote.items():
            for svc, digest in theirs.items():
                if svc in mine and mine[svc] != digest:
                    m = Mismatch(svc, node, mine[svc], digest)
                    seen[m] = self._since.get(m, now)
                    # a standing mismatch whose digests changed stays one at once
                    if now - seen[m] >= self.grace_s or (svc, node) in self._mismatch:
                        confirmed[(svc, node)] = m
        self._since = seen
        for key, m in confirmed.items():
            if self._mismatch.get(key) != m:
                self.mismatches_seen += 1
                log.warning("maglev table of %s differs from node %d's (%s here, %s there): "
                            "flows moving between the nodes may change endpoint",
                            m.service, m.node, m.local, m.remote)
        for svc, node in self._mismatch.keys() - confirmed.keys():
            if not any(m.service == svc and m.node == node for m in seen):
                log.info("maglev table of %s agrees with node %d's again (or is no longer "
                         "compared)", svc, node)
        self._mismatch = confirmed

    def mismatches(self) -> list[Mismatch]:
        with self._lock:
            return sorted(self._mismatch.values(), key=lambda m: (m.service, m.node))
