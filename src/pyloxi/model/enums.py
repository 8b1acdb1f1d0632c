"""The enumerations of the loxilb wire objects, defined once.

Numbered enums keep loxilb's numbers (the wire carries the number); word enums keep loxilb's
lower-case spelling (the wire carries the word; input is matched case-insensitively by the
field types in `pyloxi.model.fields`). `Selection` and `NatMode` are also the C datapath's
`enum pl_sel` / `enum pl_mode` values (tests/unit/test_limits.py compares them).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class Selection(IntEnum):
    """Endpoint selection (`sel`), numbered as loxilb numbers it."""

    RR = 0
    HASH = 1
    PRIORITY = 2
    PERSIST = 3
    LC = 4
    N2 = 5
    N3 = 6


class NatMode(IntEnum):
    """NAT mode (`mode`), numbered as loxilb numbers it."""

    DEFAULT = 0
    ONEARM = 1
    FULLNAT = 2
    DSR = 3
    FULLPROXY = 4
    HOSTONEARM = 5


class Oper(IntEnum):
    """What a POST does with the listed endpoints (`oper`)."""

    CREATE = 0
    ATTACH = 1
    DETACH = 2


class Protocol(StrEnum):
    """L4 protocol of a rule."""

    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"
    ICMP = "icmp"


PROTOCOLS: Final[tuple[str, ...]] = tuple(p.value for p in Protocol)
PROTO_NUMBERS: Final[dict[str, int]] = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}


class ProbeType(StrEnum):
    """A liveness probe (`probetype` of a rule, `probeType` of an endpoint)."""

    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"
    PING = "ping"
    HTTP = "http"
    HTTPS = "https"
    NONE = "none"


# The probe type words, in one order for every message that lists them. A rule's probetype may
# also be "" (the wire default): probe with the rule's own protocol if `monitor` is on. An
# endpoint's probeType "" means ping.
PROBE_TYPES: Final[tuple[str, ...]] = tuple(p.value for p in ProbeType)


class HostState(StrEnum):
    """An external verdict on a host (POST /config/endpointhoststate)."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


HOST_STATES: Final[tuple[str, ...]] = tuple(s.value for s in HostState)
