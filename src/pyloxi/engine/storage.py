"""What the engine asks of the rule store: ops, a commit to wait on, and how a failed write is
reported. The engine submits under its lock (ordering) and waits outside it (group commit);
store.py implements it with SQLite, tests with fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pyloxi.engine.validate import RuleKey, validate
from pyloxi.model.errors import PyloxiError
from pyloxi.model.lb import PROTOCOLS, LoadBalancerEntry, NatMode


@dataclass(frozen=True, slots=True)
class Put:
    """Store op: the rule stored under `key` becomes `entry` (a new key goes last)."""

    key: str
    entry: LoadBalancerEntry


@dataclass(frozen=True, slots=True)
class Delete:
    """Store op: forget the rule stored under `key`."""

    key: str


StoreOp = Put | Delete


class StoreFailure(Exception):
    """Ops from submission `from_seq` on were not made durable (and never will be): the
    store refuses every later submission until `resume(from_seq)`, so nothing computed on top
    of a lost change reaches the disk before the engine has undone it."""

    def __init__(self, from_seq: int, message: str) -> None:
        super().__init__(message)
        self.from_seq = from_seq
        self.message = message


class Commit(Protocol):
    seq: int

    def wait(self) -> None:
        """Return once the ops are durable; raise StoreFailure if they never will be."""
        ...


class RuleStore(Protocol):
    """Where acknowledged rules live. `submit` must not block (it is called under the engine
    lock, which orders submissions); durability is awaited outside the lock, so many requests
    share one disk flush (group commit)."""

    def submit(self, ops: Sequence[StoreOp]) -> Commit: ...

    def resume(self, from_seq: int) -> None: ...


def store_key(key: RuleKey) -> str:
    """A rule's identity in the store (independent of how RuleKey prints itself)."""
    return f"{key.vip}|{key.protocol}|{key.port}|{key.port_max}|{key.block}|{key.host}"


def entry_store_key(entry: LoadBalancerEntry) -> str | None:
    """The store key of a posted entry; None if it is not a valid rule."""
    try:
        spec = validate(entry, supported_modes=frozenset(NatMode),
                        supported_protocols=frozenset(PROTOCOLS))
    except PyloxiError:
        return None
    return store_key(spec.key)
