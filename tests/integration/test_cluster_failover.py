"""The whole cluster, as a user runs it: two `pyloxi daemon --bgp --cluster` nodes, keepalived
with the shipped notify script, a BIRD router, a download through the VIP while the MASTER dies
(its links go down). Topology and steps: pyloxi.testing.cluster_lab (also `make demo-cluster`).

With conntrack sync the download must complete byte-identical with no reset and the router
must end up routing to the survivor; without it (the control) the same failure must lose the
download, or surviving proves nothing. Times are printed (-s), never asserted."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from pyloxi.testing.cluster_lab import GATEWAY, SIZE, ClusterLab, Failover, report

pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in ("keepalived", "gobgpd", "bird", "nginx")),
    reason="needs keepalived, gobgpd, bird2 and nginx (scripts/install-deps)")


def run(sync: bool, mode: int = 0) -> Failover:
    lab = ClusterLab(sync=sync, mode=mode)
    try:
        lab.start()
        result = lab.download_through_failure()
        print(f"\ncluster failover, mode={mode} sync={sync}: {json.dumps(report(result))}")
        assert lab.nodes[1].ha_state() == "MASTER"  # keepalived -> notify -> cistate
        return result
    finally:
        lab.close()


@pytest.fixture(scope="module", params=[0, 1], ids=["default", "onearm"])
def synced(request: pytest.FixtureRequest) -> Iterator[Failover]:
    """default mode, and onearm whose SNAT source is the instance IP keepalived moves."""
    result = run(sync=True, mode=request.param)
    if request.param == 1:  # SNATed to the floating instance IP, not lb1's own address
        assert result.action.startswith(f"fdnat-{GATEWAY},"), result.action
    else:
        assert result.action.startswith("dnat-"), result.action
    yield result


def test_download_survives_the_masters_death(synced: Failover) -> None:
    assert synced.in_flight_bytes < SIZE          # the failure was mid-transfer
    assert synced.synced_on_backup                # the BACKUP had the flow before the failure
    assert synced.complete, report(synced)        # whole body, same SHA-256
    assert synced.resets == 0, report(synced)
    assert synced.converged_s is not None         # BGP moved the VIP to the survivor


def test_without_sync_the_same_failure_loses_the_download() -> None:
    control = run(sync=False)
    assert control.in_flight_bytes < SIZE
    assert not control.complete or control.resets > 0, report(control)
