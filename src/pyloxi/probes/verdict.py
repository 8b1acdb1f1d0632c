"""The up/down state machine of one probe target, and the status it shows.

- A target is up until probes say otherwise. A failed probe takes it down once `retries`
  consecutive probes failed (one, for the very first probe of new parameters); one successful
  probe brings it back.
- An external "red" verdict forces it down whatever the probes say (`effective`).
- A change is reported once: `settle()` tells whether the effective verdict moved since the last
  report, so a probe flip hidden by "red" is not reported at all.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pyloxi.probes.types import ProbeResult, ProbeTarget

RTT_SAMPLES = 16


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    key: str
    target: ProbeTarget
    up: bool  # the verdict in force (probe state and external red verdict)
    state: str  # loxilb currState: ok | nok | red
    probe_up: bool  # what the probes alone say
    failures: int  # consecutive failed probes
    probes: int  # probes done
    last_probe_time: float | None  # wall clock (time.time())
    last_ok: bool | None
    last_reason: str
    since: float  # wall clock of the last change of `up`
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    owners: tuple[str, ...]


class Verdict:
    __slots__ = ("up", "red", "reported", "fails", "first", "probes", "last_time", "last_ok",
                 "last_reason", "since", "rtts")

    def __init__(self, now: float) -> None:
        self.up = True  # assumed until a probe says otherwise
        self.red = False
        self.reported = True
        self.fails = 0
        self.first = True
        self.probes = 0
        self.last_time: float | None = None
        self.last_ok: bool | None = None
        self.last_reason = ""
        self.since = now
        self.rtts: deque[float] = deque(maxlen=RTT_SAMPLES)

    @property
    def effective(self) -> bool:
        return self.up and not self.red

    def restart(self, first: bool) -> None:
        """New probe parameters: failures counted so far say nothing about them."""
        self.fails = 0
        self.first = first

    def record(self, t: ProbeTarget, res: ProbeResult, now: float) -> str | None:
        """Count one probe of `t`; the reason to report if it flipped what the probes say."""
        self.probes += 1
        self.last_time = now
        self.last_ok = res.ok
        self.last_reason = res.reason
        if res.rtts:
            self.rtts.extend(res.rtts)
        elif t.ptype == "ping" and not res.ok:
            self.rtts.clear()
        flipped = None
        if res.ok:
            if not self.up:
                self.up = True
                flipped = f"{res.reason} after {self.fails} failed probe(s)"
            self.fails = 0
        else:
            self.fails += 1
            threshold = 1 if self.first else t.eff_retries
            if self.up and self.fails >= threshold:
                self.up = False
                flipped = f"{res.reason} ({self.fails} consecutive failed probe(s))"
        self.first = False
        return flipped

    def settle(self, now: float) -> bool:
        """Whether the effective verdict changed since it was last reported (it is now)."""
        if self.effective == self.reported:
            return False
        self.reported = self.effective
        self.since = now
        return True

    def status(self, key: str, target: ProbeTarget, owners: tuple[str, ...]) -> ProbeStatus:
        rtts = list(self.rtts)
        return ProbeStatus(
            key=key, target=target, up=self.effective,
            state="red" if self.red else ("ok" if self.up else "nok"),
            probe_up=self.up, failures=self.fails, probes=self.probes,
            last_probe_time=self.last_time, last_ok=self.last_ok, last_reason=self.last_reason,
            since=self.since,
            rtt_min=min(rtts) if rtts else None,
            rtt_avg=sum(rtts) / len(rtts) if rtts else None,
            rtt_max=max(rtts) if rtts else None,
            owners=owners,
        )
