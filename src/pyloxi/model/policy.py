"""QoS policer: loxilb's `PolicyEntry` wire object (policyIdent, policyInfo, targetObject).

Values are typed here; what depends on several fields (rates, burst defaults, the target) is
checked by `pyloxi.engine.policer`.
"""

from __future__ import annotations

from pydantic import Field

from pyloxi.model.base import Name, WireModel, wire_names
from pyloxi.model.fields import UInt32

__all__ = ["PolicyEntry", "PolicyInfo", "PolicyList", "PolicyObj", "PolicyStats"]

POL_TRTCM, POL_SRTCM = 0, 1  # policyInfo.type
ATTACH_PORT, ATTACH_RULE = 1, 2  # targetObject.attachment (loxilb's code, not its swagger)
# pyloxi extensions: an endpoint ("IP" or "IP:PORT"), a client ("IP")
ATTACH_ENDPOINT, ATTACH_CLIENT = 3, 4


class PolicyInfo(WireModel):
    model_config = wire_names(
        type="type", color_aware="colorAware", committed_info_rate="committedInfoRate",
        peak_info_rate="peakInfoRate", committed_blk_size="committedBlkSize",
        excess_blk_size="excessBlkSize",
    )  # fmt: skip

    type: UInt32 = POL_TRTCM  # 0 trTCM, 1 srTCM
    color_aware: bool = False  # accepted; policing is colour-blind
    committed_info_rate: UInt32 = 0  # Mbps
    peak_info_rate: UInt32 = 0  # Mbps
    committed_blk_size: UInt32 = 0  # bytes; 0: the default (see engine.policer)
    excess_blk_size: UInt32 = 0  # ignored on input (always 2 x committedBlkSize)


class PolicyObj(WireModel):
    model_config = wire_names(attachment="attachment", pol_obj_name="polObjName")

    attachment: UInt32  # 1 port, 2 LB rule (by its name), 3 endpoint, 4 client (extensions)
    pol_obj_name: Name


class PolicyStats(WireModel):
    """pyloxi's extension of GET: what the policer let through and dropped."""

    model_config = wire_names(packets_ok="packetsOK", packets_dropped="packetsDropped",
                              bytes_ok="bytesOK", bytes_dropped="bytesDropped")

    packets_ok: int = 0
    packets_dropped: int = 0
    bytes_ok: int = 0
    bytes_dropped: int = 0


class PolicyEntry(WireModel):
    model_config = wire_names(policy_ident="policyIdent", policy_info="policyInfo",
                              target_object="targetObject", stats="stats")

    policy_ident: Name
    policy_info: PolicyInfo = Field(default_factory=PolicyInfo)
    target_object: PolicyObj
    stats: PolicyStats | None = None  # output only


class PolicyList(WireModel):
    model_config = wire_names(pol_attr="polAttr")

    pol_attr: list[PolicyEntry] = Field(default_factory=list)
