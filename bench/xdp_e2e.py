"""End to end with the XDP fast path on and off in the same run: the lab of bench.run
(client -- lb -- be1), pyloxi's daemon with `--datapath tc` and `--datapath xdp` in turn
(alternating, `--reps` times each), iperf3 -P 4 and wrk keep-alive through a DNAT rule.

The senders' checksum offload is off (`ethtool -K eth0 tx off` in client and be1) in both
modes, so XDP sees full checksums and forwards (with offload on, every packet is a partial
checksum XDP hands to TC, and the run measures only XDP's pass cost). On veth XDP runs in
generic mode, after the skb exists: the figures say what XDP costs or saves there, not on a NIC.

    python -m bench.xdp_e2e --reps 3 --seconds 5 --json OUT
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from pyloxi.datapath.ebpf.counters import datapath_stats
from pyloxi.datapath.ebpf.libbpf.maps import Map

from .run import BE_IP, FRONT_HTTP, FRONT_IPERF, HTTP_PORT, IPERF_PORT, Bench, Config, iperf, wrk

VIP = "20.0.0.100"
NAME = "pyloxi-dnat"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    b = Bench(Config(reps=args.reps, seconds=args.seconds))
    res: dict[str, dict[str, list[float]]] = {"tc": {}, "xdp": {}}
    try:
        b.build()
        topo = b.topo
        assert topo is not None
        for ns in (topo.client, *topo.backends):
            ns.run(["ethtool", "-K", "eth0", "tx", "off"])
        for _ in range(args.reps):
            for mode in ("tc", "xdp"):
                with b.daemon(topo.lb.name, extra=("--datapath", mode)):
                    for front, back in ((FRONT_HTTP, HTTP_PORT[NAME]),
                                        (FRONT_IPERF, IPERF_PORT[NAME])):
                        b.cli("create", "lb", VIP, f"--tcp={front}:{back}",
                              f"--endpoints={BE_IP}:1")
                    body = topo.client.run(["curl", "-sS", "--max-time", "5",
                                            f"http://{VIP}:{FRONT_HTTP}/"]).stdout
                    if not body.startswith("be1 "):
                        raise RuntimeError(f"{mode}: unexpected answer {body!r}")
                    r = res[mode]
                    r.setdefault("iperf_gbps", []).append(
                        iperf(topo, VIP, FRONT_IPERF, args.seconds))
                    ka = wrk(topo, f"http://{VIP}:{FRONT_HTTP}/", args.seconds, 32)
                    if ka["errors"] or ka["non2xx"]:
                        raise RuntimeError(f"{mode}: wrk errors {ka}")
                    r.setdefault("keepalive_rps", []).append(ka["rps"])
                    pin = topo.lab.pin_dir(f"bench{b._n}")
                    m = Map.from_pin(os.path.join(pin, "stats_map"))
                    try:
                        r.setdefault("xdp_fwd", []).append(float(datapath_stats(m)["xdp_fwd"]))
                    finally:
                        m.close()
                print(mode, {k: v[-1] for k, v in res[mode].items()}, flush=True)
    finally:
        b.close()
    out = {mode: {k: {"runs": v, "median": statistics.median(v)} for k, v in r.items()}
           for mode, r in res.items()}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
