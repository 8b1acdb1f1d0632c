"""`make demo-cluster` (demo support, not the product): two pyloxi nodes, a BGP router, and a
download that survives the MASTER's death. The topology is pyloxi.testing.cluster_lab's."""

from __future__ import annotations

import json
import sys

from pyloxi.testing.cluster_lab import BACKENDS, CLIENT, LB_FRONT, VIP, ClusterLab, report
from pyloxi.testing.lab import cleanup_stale


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(lab: ClusterLab, node: int, *args: str) -> None:
    print(f"[{lab.nodes[node].name}] $ pyloxi {' '.join(args)}")
    print(lab.nodes[node].cli(*args), flush=True)


def main() -> int:
    cleanup_stale("plcl")
    say(f"Topology: client {CLIENT} -- router (BIRD) -- lb1 {LB_FRONT[0]} / lb2 {LB_FRONT[1]} "
        f"-- backends {', '.join(BACKENDS)}")
    lab = ClusterLab()
    try:
        say("pyloxi daemon --bgp --cluster <peer> --self N on each node (gobgpd, conntrack sync)")
        lab.start(say)
        for i in (0, 1):
            show(lab, i, "get", "ha")
        show(lab, 0, "get", "lb")
        show(lab, 0, "get", "bgpneighbor")
        say(f"The router's route to {VIP} (MED 10 from the MASTER, 20 from the BACKUP)")
        print(lab.rt.run(["ip", "route", "show", f"{VIP}/32"]).stdout.rstrip())
        say("A 4 MiB download from the client, read slowly; lb1's links go down after 256 KiB")
        result = lab.download_through_failure()
        print(json.dumps(report(result), indent=1))
        say("After the failure")
        show(lab, 1, "get", "ha")
        show(lab, 1, "get", "ct")
        print(f"router: {lab.rt.run(['ip', 'route', 'show', f'{VIP}/32']).stdout.rstrip()}")
        if result.complete and result.resets == 0:
            print(f"\nThe download completed byte-identical, no reset; longest stall "
                  f"{result.takeover_s:.2f} s. keepalived made lb2 MASTER in ~0.4 s; the "
                  f"router dropped lb1's route at its BGP hold time "
                  f"({result.converged_s or 0:.1f} s after the failure).")
            return 0
        print("\nThe download did NOT survive.")
        return 1
    finally:
        say("Removing the namespaces")
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
