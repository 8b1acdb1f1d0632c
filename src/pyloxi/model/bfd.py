"""loxilb's built-in BFD sessions as its REST API speaks them (handler/bfd.go, common.BFDMod).

    POST   /config/bfd                       BfdEntry {instance, remoteIp, sourceIp,
                                                       interval (us), retryCount}
    GET    /config/bfd/all                   {"Attr": [BfdGetEntry]}
    DELETE /config/bfd/remoteIP/{ip}?instance=

The GET entry spells the source `sourceIP` and the POST body `sourceIp` (loxilb's swagger);
keys are matched case-insensitively anyway.
"""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import Address, Name, WireModel, Word, wire_names

BFD_PORT = 3784  # RFC 5881 single-hop control packets (loxilb's cmn.BFDPort)
MIN_TX_INTERVAL_US = 100_000  # loxilb's BFDMinSysTXIntervalUs
DEFAULT_TX_INTERVAL_US = 200_000  # loxilb's BFDDflSysTXIntervalUs
DEFAULT_MULTIPLIER = 3
# An interval longer than an hour detects nothing useful; it also keeps the value in the
# packet's 32-bit microsecond field.
MAX_TX_INTERVAL_US = 3_600_000_000

# loxilb's BFDStateMap
ADMIN_DOWN, DOWN, INIT, UP = 0, 1, 2, 3
STATE_NAMES = {ADMIN_DOWN: "BFDAdminDown", DOWN: "BFDDown", INIT: "BFDInit", UP: "BFDUp"}


class BfdEntry(WireModel):
    """The POST body. instance "" is the default instance; interval 0 and retryCount 0 take
    the defaults (200000 us, 3)."""

    model_config = wire_names(instance="instance", remote_ip="remoteIp", source_ip="sourceIp",
                              interval="interval", retry_count="retryCount")

    instance: Name = ""
    remote_ip: Address = ""
    source_ip: Address = ""
    interval: int = Field(default=0, ge=0, le=MAX_TX_INTERVAL_US)
    retry_count: int = Field(default=0, ge=0, le=255)  # a uint8 (the packet's Detect Mult)


class BfdGetEntry(WireModel):
    model_config = wire_names(instance="instance", remote_ip="remoteIp", source_ip="sourceIP",
                              port="port", interval="interval", retry_count="retryCount",
                              state="state")

    instance: Name
    remote_ip: Address
    source_ip: Address
    port: int = BFD_PORT
    interval: int
    retry_count: int
    state: Word


class BfdList(WireModel):
    model_config = wire_names(attr="Attr")

    attr: list[BfdGetEntry] = Field(default_factory=list)
