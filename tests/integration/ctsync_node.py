"""One load balancer node of the conntrack-sync failover test, run inside its namespace:
the eBPF datapath attached to eth0/eth1, one service, and (unless --no-sync) the conntrack sync
loop. Commands on stdin, one a line: MASTER, BACKUP (the role switch keepalived would make
through the HA state), stats (one JSON line), quit. Answers "ok" / JSON on stdout."""

from __future__ import annotations

import argparse
import json
import sys

from pyloxi.cluster.ctsync import CtSync
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.engine.program import EndpointSlot, ServiceProgram
from pyloxi.model.lb import NatMode, Selection


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pin", required=True)
    ap.add_argument("--obj", required=True)
    ap.add_argument("--vip", required=True)
    ap.add_argument("--eps", required=True)
    ap.add_argument("--mode", default="default")
    ap.add_argument("--sel", default="rr")
    ap.add_argument("--cluster", default="")
    ap.add_argument("--self", dest="self_index", type=int, default=0)
    ap.add_argument("--role", default="BACKUP")
    ap.add_argument("--no-sync", action="store_true")
    a = ap.parse_args()

    mode = {"default": NatMode.DEFAULT, "fullnat": NatMode.FULLNAT}[a.mode]
    sel = {"rr": Selection.RR, "hash": Selection.HASH}[a.sel]
    eps = a.eps.split(",")
    snat = a.vip if mode == NatMode.FULLNAT else None
    prog = ServiceProgram(
        svc_id=1, name="dl", vip=a.vip, proto=6, port_min=80, port_max=80, mode=mode, sel=sel,
        endpoints=tuple(EndpointSlot(ip, 80, 1, True, snat) for ip in eps),
        slots=tuple(range(len(eps))), idle_timeout=240, allowed_sources=())
    dp = EbpfDatapath(a.pin, obj_path=a.obj)
    sync: CtSync | None = None
    try:
        dp.attach(["eth0", "eth1"])
        dp.install_service(prog)
        if not a.no_sync:
            sync = CtSync(dp.flow_sync())
            sync.start(a.cluster.split(","), a.self_index, a.role)
        print("ready", flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd in ("MASTER", "BACKUP"):
                if sync is not None:
                    sync.set_role(cmd)
                print("ok", flush=True)
            elif cmd == "stats":
                out = {"dp": dp.datapath_stats(),
                       "packets": dp.service_counters(prog).packets,
                       "sent": sync.sent if sync else 0,
                       "received": sync.received if sync else 0,
                       "applied": dict(sync.applied) if sync else {}}
                print(json.dumps(out), flush=True)
            elif cmd == "quit":
                break
    finally:
        if sync is not None:
            sync.stop()
        dp.destroy()


if __name__ == "__main__":
    main()
