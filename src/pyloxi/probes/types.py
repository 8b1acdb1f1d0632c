"""Probe targets, probe results and the timing defaults.

Timing (all in seconds):

- `period`   how often a healthy target is probed (loxilb's probeTimeout / probeDuration);
             default 10.
- `retries`  consecutive failures that take a healthy target down; default 2 (0 means default).
- `timeout`  how long one probe may take; default min(1, period/2).
- After a failure — while a target is suspect or down — it is re-probed every
  `fast_interval = max(timeout, period/2)` instead of every period. So a target whose peer dies
  is marked down at most `period + (retries-1)*fast_interval + timeout` after the death
  (<= period*retries + 1 whenever timeout <= 1) and marked up again at most
  `fast_interval + timeout` after the peer recovers (< period).
- The very first probe of a new target uses a threshold of 1 (as loxilb does): a new endpoint
  that is dead leaves rotation after one failed probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyloxi.model.enums import PROBE_TYPES as PROBE_TYPES

PORTED_TYPES = ("tcp", "udp", "sctp", "http", "https")

DEFAULT_PERIOD = 10.0
DEFAULT_RETRIES = 2
DEFAULT_TIMEOUT = 1.0
UDP_DEFAULT_REQUEST = b"probe"  # what loxilb sends when no probereq is configured


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One thing to probe. `key` identifies it (loxilb: `<ip>_<proto>_<port>` or a name).

    `ep_proto`/`ep_port` name the LB endpoint the verdict applies to (set for rule-made targets;
    empty for hosts created only through the endpoint API).
    """

    key: str
    ip: str
    ptype: str = "ping"
    port: int = 0
    req: str = ""
    resp: str = ""
    period: float = DEFAULT_PERIOD
    retries: int = DEFAULT_RETRIES
    timeout: float | None = None
    ep_proto: str = ""
    ep_port: int = 0
    # TLS for https probes: None means "use the manager's cert_dir defaults".
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_verify: bool = True

    @property
    def eff_period(self) -> float:
        return self.period if self.period and self.period > 0 else DEFAULT_PERIOD

    @property
    def eff_retries(self) -> int:
        return self.retries if self.retries and self.retries > 0 else DEFAULT_RETRIES

    @property
    def eff_timeout(self) -> float:
        if self.timeout and self.timeout > 0:
            return self.timeout
        return min(DEFAULT_TIMEOUT, self.eff_period / 2)

    @property
    def fast_interval(self) -> float:
        return max(self.eff_timeout, self.eff_period / 2)

    def probe_params(self) -> tuple[object, ...]:
        """What decides a probe's outcome (a change resets the failure count)."""
        return (self.ip, self.ptype, self.port, self.req, self.resp, self.ca_file,
                self.cert_file, self.key_file, self.tls_verify)


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    reason: str
    rtts: list[float] = field(default_factory=list)  # seconds; ping only

