"""NAT port exhaustion: new flows of one endpoint at a given NAT-port occupancy (BPF_PROG_TEST_RUN).

    python -m bench.snat_ports [--obj build/lb.bpf.o] [--syns 2000] [--json OUT]

An onearm service (one endpoint, SNAT to the LB's address, NAT ports 49152-65535 = 16384) gets
its conntrack prefilled with established flows holding a random `occupancy` share of the ports.
Then `--syns` SYNs from distinct clients arrive; each made flow is deleted again at once, so the
occupancy stays put. Reported per occupancy: SYNs forwarded, refused to the kernel (it answers
the client with a RST), dropped silently, and how many of the failures a retransmitted SYN (up
to 3 times) still gets through. Runs in a network namespace of its own and removes it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import time

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pyloxi.testing.lab.dpns import LB_MAC, datapath_netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT_MAC, EP_MAC = "02:00:00:00:01:02", "02:00:00:00:11:02"
VIP, EP, SNAT = "20.0.0.100", "10.0.11.2", "10.0.11.1"
PORT_MIN, SPAN = 49152, 16384
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7


def run(obj: str, syns: int, occupancies: list[float]) -> dict[str, object]:
    from pyloxi.datapath.ebpf import layout as L
    from pyloxi.datapath.ebpf.backend import EbpfDatapath
    from pyloxi.datapath.ebpf.libbpf.testrun import prog_test_run
    from pyloxi.engine.program import EndpointSlot, ServiceProgram
    from pyloxi.model.lb import NatMode, Selection

    ifindex = socket.if_nametoindex("dp0")
    ctx = struct.pack("<36xII", ifindex, ifindex).ljust(192, b"\0")
    out: dict[str, object] = {"obj": obj, "syns": syns}
    for occ in occupancies:
        pin = f"/sys/fs/bpf/pl{os.getpid()}-snat"
        dp = EbpfDatapath(pin, obj_path=obj)
        try:
            dp.install_service(ServiceProgram(
                svc_id=1, name="s", vip=VIP, proto=6, port_min=80, port_max=80,
                mode=NatMode.ONEARM, sel=Selection.RR,
                endpoints=(EndpointSlot(EP, 8080, 1, True, SNAT),), slots=(0,), idle_timeout=240))
            maps = dp.maps
            tables = [maps["ct_map"]] + ([maps["ct_half"]] if "ct_half" in maps else [])
            rnd = random.Random(75)
            taken = rnd.sample(range(SPAN), int(SPAN * occ))
            now = time.monotonic_ns()
            keys, vals = [], []
            for n, i in enumerate(taken):
                client, cport = f"10.1.{n // 250}.{n % 250 + 1}", 30000
                port = PORT_MIN + i
                keys.append(bytes(L.ct_key(client, VIP, cport, 80, 6)))
                vals.append(bytes(L.ct_val(
                    SNAT, EP, port, 8080, svc_id=1, dir=L.DIR_ORIG, mode=1,
                    seen=L.CT_SYN | L.CT_ACK, created_ns=now, last_ns=now)))
                keys.append(bytes(L.ct_key(EP, SNAT, 8080, port, 6)))
                vals.append(bytes(L.ct_val(
                    VIP, client, 80, cport, svc_id=1, dir=L.DIR_REPLY, mode=1,
                    seen=L.CT_SYNACK | L.CT_ACK, created_ns=now, last_ns=now)))
            if keys:
                maps["ct_map"].update_batch(keys, vals)
            res = {"forwarded": 0, "answered": 0, "dropped": 0, "retry_ok": 0}
            for n in range(syns):
                src = f"10.50.{n // 250}.{n % 250 + 1}"
                pkt = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=src, dst=VIP, ttl=64) /
                            TCP(sport=40000, dport=80, flags="S", seq=1000))
                first = None
                for attempt in range(4):  # the SYN, then up to 3 retransmissions
                    r = prog_test_run(dp.prog_fd, pkt, ctx=ctx, data_size_out=256)
                    if attempt == 0:
                        first = r.retval
                    if r.retval == TC_ACT_REDIRECT:
                        if attempt > 0:
                            res["retry_ok"] += 1
                        nat_port = TCP(r.data[34:54]).sport
                        ok = L.ct_key(src, VIP, 40000, 80, 6)
                        rk = L.ct_key(EP, SNAT, 8080, nat_port, 6)
                        for t in tables:  # keep the occupancy where it was
                            t.delete(bytes(ok))
                            t.delete(bytes(rk))
                        break
                if first == TC_ACT_REDIRECT:
                    res["forwarded"] += 1
                elif first == TC_ACT_OK:
                    res["answered"] += 1
                else:
                    res["dropped"] += 1
            res["nat_exhausted_stat"] = dp.datapath_stats()["nat_exhausted"]
            out[f"{int(occ * 100)}%"] = res
        finally:
            dp.destroy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--obj", default=os.path.join(ROOT, "build", "lb.bpf.o"))
    ap.add_argument("--syns", type=int, default=2000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with datapath_netns(f"pl{os.getpid()}-snat", (
        "ip route add 10.0.0.0/8 via 10.0.1.2 dev dp0 onlink",
        f"ip neigh add 10.0.1.2 lladdr {CLIENT_MAC} dev dp0 nud permanent",
        f"ip neigh add {EP} lladdr {EP_MAC} dev dp1 nud permanent",
        f"ip addr add {VIP}/32 dev lo",
    )):
        res = run(os.path.abspath(args.obj), args.syns, [0.75, 1.0])
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
