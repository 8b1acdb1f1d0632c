"""Conntrack route: GET /config/conntrack/all (loxilb has no flush or delete)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pyloxi.api.deps import EngineDep
from pyloxi.api.errors import LoxiRoute
from pyloxi.model.conntrack import ConntrackList

router = APIRouter(prefix="/config/conntrack", tags=["conntrack"], route_class=LoxiRoute)


@router.get("/all", summary="List tracked connections", response_model=ConntrackList)
def list_conntrack(engine: EngineDep) -> dict[str, Any]:
    return {"ctAttr": [c.wire() for c in engine.conntrack()]}
