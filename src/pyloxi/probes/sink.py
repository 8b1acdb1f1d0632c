"""Probe verdicts to the engine: an on_change for ProbeManager."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Protocol

from pyloxi.probes.manager import OnChange
from pyloxi.probes.types import ProbeTarget

log = logging.getLogger("pyloxi.probes")


class EndpointStates(Protocol):
    def set_endpoint_state(self, ip: str, *, port: int | None = None,
                           protocol: str | None = None, up: bool) -> object: ...


def engine_sink(engine: EndpointStates, *, executor: Executor | None = None,
                on_down: Callable[[ProbeTarget], object] | None = None) -> OnChange:
    """An on_change that tells the engine: engine.set_endpoint_state(ip, port=, protocol=, up=),
    then `on_down(target)` for a down verdict. Targets that stand for no LB endpoint (API-only
    hosts) are not passed on.

    With an executor the engine is called there, not in the event loop: its lock may be held by
    a bulk change for a while, and the loop must keep probing. Give it one worker and the
    verdicts are applied in the order they were reached."""

    def apply(target: ProbeTarget, up: bool) -> None:
        try:
            engine.set_endpoint_state(target.ip, port=target.ep_port, protocol=target.ep_proto,
                                      up=up)
            if not up and on_down is not None:
                on_down(target)
        except Exception:
            log.exception("could not apply the verdict on %s", target.key)

    def on_change(target: ProbeTarget, up: bool, reason: str) -> None:
        if target.ep_proto:
            apply(target, up)

    async def on_change_off_loop(target: ProbeTarget, up: bool, reason: str) -> None:
        if target.ep_proto:
            await asyncio.get_running_loop().run_in_executor(executor, apply, target, up)

    return on_change if executor is None else on_change_off_loop
