"""Endpoint liveness probes (asyncio): ping, tcp, udp, sctp, http, https, none."""

from pyloxi.probes.manager import ProbeManager, ProbeStatus, engine_sink, targets_for_rule
from pyloxi.probes.types import ProbeResult, ProbeTarget

__all__ = ["ProbeManager", "ProbeResult", "ProbeStatus", "ProbeTarget", "engine_sink",
           "targets_for_rule"]
