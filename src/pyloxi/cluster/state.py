"""The HA state of this node: loxilb's cluster instances (pkg/loxinet/cluster.go).

    keepalived notify / kube-loxilb -> POST /config/cistate -> ClusterState.set_state()
        -> subscribers (StateSync: the instance's VIPs local or not; later conntrack sync, BGP)

Each instance has a state (MASTER, BACKUP, FAULT, STOP, NOT_DEFINED) and a VIP (informational,
as in loxilb: the VIPs that move are those of the instance's rules). Before any cistate call the
node has one instance, `llb-inst0`, NOT_DEFINED with VIP 0.0.0.0, as loxilb's CIInit; a NOT_DEFINED
instance serves its rules as a standalone node does.

Unlike loxilb (memory only), the states are kept in `<state-dir>/cistate.json` when a path is
given: a BACKUP node that restarts must not take its VIPs back (and announce them) until
keepalived calls again, which it does only on its next transition.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyloxi.model.cluster import (
    DEFAULT_INSTANCE,
    NOT_DEFINED,
    SERVING_STATES,
    STATES,
    instance_of,
)
from pyloxi.model.errors import InvalidInput
from pyloxi.store import write_atomic

log = logging.getLogger(__name__)

UNSPECIFIED_VIP = "0.0.0.0"


@dataclass(frozen=True)
class ClusterConfig:
    """loxilb's cluster flags of `pyloxi daemon`: stored here for the parts that use them."""

    peers: tuple[str, ...] = ()  # --cluster: peer addresses (conntrack sync)
    self_index: int = 0  # --self: this node's index among the cluster's nodes
    interface: str = ""  # --clusterinterface
    bgp: bool = False  # --bgp: advertise VIPs through gobgpd


@dataclass(frozen=True)
class Instance:
    name: str
    state: str = NOT_DEFINED
    vip: str = UNSPECIFIED_VIP

    @property
    def serving(self) -> bool:
        """Whether this node makes the instance's VIPs local (loxilb's AdvRuleVIP)."""
        return self.state in SERVING_STATES


Listener = Callable[[Instance, Instance], None]  # (before, after)


@dataclass
class ClusterState:
    """Instances by name, thread-safe. Listeners are called after a change, outside the lock,
    in the caller's thread (the API's): they should only hand the change on."""

    config: ClusterConfig = field(default_factory=ClusterConfig)
    path: Path | None = None
    _instances: dict[str, Instance] = field(default_factory=dict, init=False)
    _listeners: list[Listener] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._instances[DEFAULT_INSTANCE] = Instance(DEFAULT_INSTANCE)
        if self.path is not None:
            self._load(self.path)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(before, after)` on each change; returns the unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def instances(self) -> list[Instance]:
        with self._lock:
            return sorted(self._instances.values(), key=lambda i: i.name)

    def instance(self, name: str) -> Instance:
        """The named instance; one never set is NOT_DEFINED (not created by asking)."""
        with self._lock:
            return self._instances.get(name) or Instance(name)

    def role_of(self, rule_name: str) -> str:
        """The state of the instance that the rule named `rule_name` belongs to."""
        return self.instance(instance_of(rule_name)).state

    def serves(self, rule_name: str) -> bool:
        return self.instance(instance_of(rule_name)).serving

    def set_state(self, instance: str, state: str, vip: str = "") -> bool:
        """loxilb's CIStateUpdate: False when the instance already has `state` (its VIP is
        then left as it was, as loxilb does). Bad input raises InvalidInput, nothing changed
        (loxilb creates the instance before refusing the state; we do not)."""
        if state not in STATES:
            raise InvalidInput("invalid cluster-state")
        vip = _vip(vip)
        name = instance or DEFAULT_INSTANCE
        with self._lock:
            if name not in self._instances:  # loxilb creates it NOT_DEFINED, VIP 0.0.0.0
                self._instances[name] = Instance(name)
                self._save()
            before = self._instances[name]
            if before.state == state:
                return False
            after = Instance(name, state, vip)
            self._instances[name] = after
            listeners = list(self._listeners)
            self._save()
        log.info("HA instance %s: %s -> %s (vip %s)", name, before.state, state, vip)
        for listener in listeners:
            try:
                listener(before, after)
            except Exception:  # one listener's failure must not keep the others uninformed
                log.exception("HA state listener failed")
        return True

    def _save(self) -> None:
        if self.path is None:
            return
        data = {i.name: {"state": i.state, "vip": i.vip} for i in self._instances.values()}
        try:
            write_atomic(self.path, json.dumps(data, sort_keys=True))
        except OSError as exc:  # the state still holds in memory, as loxilb's
            log.warning("HA state not saved to %s: %s", self.path, exc)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("HA state file %s unreadable, starting NOT_DEFINED: %s", path, exc)
            return
        if not isinstance(data, dict):
            log.warning("HA state file %s: not an object, ignored", path)
            return
        for name, item in data.items():
            try:
                state, vip = item["state"], _vip(item["vip"])
            except (TypeError, KeyError, InvalidInput):
                log.warning("HA state file %s: instance %r ignored", path, name)
                continue
            if isinstance(name, str) and state in STATES:
                self._instances[name] = Instance(name, state, vip)
        log.info("HA state restored: %s", ", ".join(
            f"{i.name}={i.state}" for i in sorted(self._instances.values(),
                                                  key=lambda i: i.name)))


def _vip(value: object) -> str:
    """An address in one spelling; "" is loxilb's nil VIP (0.0.0.0)."""
    if not isinstance(value, str):
        raise InvalidInput("invalid vip: not a string")
    if value == "":
        return UNSPECIFIED_VIP
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidInput(f"invalid vip {value[:64]!r}: address malformed") from None
