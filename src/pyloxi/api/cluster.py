"""Active-active status (a pyloxi extension, loxilb has no such route):

- GET /cluster/status   ClusterStatus {self, peers, maglevMismatches, maglevMismatchCount,
                        probeDisagreements, probeOverrides}

The api layer does not import pyloxi.cluster (it sits above the api): the daemon hands in a
callable returning the status (pyloxi.cluster.activeactive.ActiveActive.status), or None when
the daemon runs without --cluster (then the answer is this node alone: no peers, nothing to
disagree with).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from pyloxi.api.errors import LoxiRoute
from pyloxi.model.cluster import ClusterStatus


def cluster_router(status: Callable[[], ClusterStatus] | None) -> APIRouter:
    router = APIRouter(prefix="/cluster", tags=["cluster"], route_class=LoxiRoute)

    @router.get("/status", summary="Peers heard, Maglev table mismatches, probe disagreements",
                response_model=ClusterStatus)
    async def get_status() -> dict[str, Any]:
        return (status() if status is not None else ClusterStatus()).wire()

    return router
