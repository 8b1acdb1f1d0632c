"""Endpoint liveness probes (asyncio): ping, tcp, udp, sctp, http, https, none."""

from pyloxi.probes.clock import Clock, LoopClock
from pyloxi.probes.manager import ProbeManager
from pyloxi.probes.owners import API_OWNER
from pyloxi.probes.rule_targets import targets_for_rule
from pyloxi.probes.sink import engine_sink
from pyloxi.probes.types import ProbeResult, ProbeTarget
from pyloxi.probes.verdict import ProbeStatus

__all__ = ["API_OWNER", "Clock", "LoopClock", "ProbeManager", "ProbeResult", "ProbeStatus",
           "ProbeTarget", "engine_sink", "targets_for_rule"]
