"""Mirror: loxilb's `MirrorEntry` wire object (mirrorIdent, mirrorInfo, targetObject).

Values are typed here; what depends on several fields (the VLAN of RSPAN, ERSPAN) is checked by
`pyloxi.engine.mirror`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from pyloxi.model.base import Address, CounterText, Name, WireModel, wire_names
from pyloxi.model.fields import UInt32

__all__ = ["MirrorEntry", "MirrorGetEntry", "MirrorInfo", "MirrorList", "MirrorTarget"]

MirrorType = Annotated[int, Field(ge=0, le=2)]  # 0 SPAN, 1 RSPAN, 2 ERSPAN
Attachment = Annotated[int, Field(ge=0, le=2)]  # 1 port, 2 LB rule (by name); 0: refused
VlanId = Annotated[int, Field(ge=0, le=4095)]


class MirrorInfo(WireModel):
    model_config = wire_names(
        type="type", port="port", vlan="vlan", remote_ip="remoteIP", source_ip="sourceIP",
        tunnel_id="tunnelID",
    )  # fmt: skip

    type: MirrorType = 0
    port: Name = ""  # the mirror port: where the copies are sent
    vlan: VlanId = 0  # RSPAN: the 802.1Q VLAN id of the copies
    remote_ip: Address = ""  # ERSPAN only (not supported)
    source_ip: Address = ""
    tunnel_id: UInt32 = 0


class MirrorTarget(WireModel):
    model_config = wire_names(attachment="attachment", mirr_obj_name="mirrObjName")

    attachment: Attachment
    mirr_obj_name: Name  # the interface (attachment 1) or the LB rule name (2)

    @model_validator(mode="before")
    @classmethod
    def _loxicmd_spelling(cls, data: Any) -> Any:
        """loxicmd sends "attachement" (its typo): taken as "attachment" when that is absent."""
        if not isinstance(data, dict):
            return data
        typo = next((k for k in data if isinstance(k, str) and k.lower() == "attachement"), None)
        if typo is None or any(isinstance(k, str) and k.lower() == "attachment" for k in data):
            return data
        out = {k: v for k, v in data.items() if k != typo}
        out["attachment"] = data[typo]
        return out


class MirrorEntry(WireModel):
    model_config = wire_names(mirror_ident="mirrorIdent", mirror_info="mirrorInfo",
                              target_object="targetObject")

    mirror_ident: Name
    mirror_info: MirrorInfo = Field(default_factory=MirrorInfo)
    target_object: MirrorTarget


class MirrorGetEntry(MirrorEntry):
    model_config = wire_names(mirror_ident="mirrorIdent", mirror_info="mirrorInfo",
                              target_object="targetObject", sync="sync", counter="counter")

    sync: int = 0  # loxilb's cluster sync state; always 0 here (mirrors are node-local)
    counter: CounterText = ""  # pyloxi: "<packets>:<bytes>" copied to the mirror port


class MirrorList(WireModel):
    model_config = wire_names(mirr_attr="mirrAttr")

    mirr_attr: list[MirrorGetEntry] = Field(default_factory=list)
