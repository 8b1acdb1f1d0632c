"""Long-lived TCP flows for the SYN-flood benchmark; runs in the client namespace.

    python -m bench.flows HOST --bulk-port P --bulk N --echo-port Q --idle M --phase-s S \
        --mark FILE --json OUT

Opens N bulk connections to HOST:P (a server that streams without end) and M mostly idle ones to
HOST:Q (an echo server; each sends 16 bytes every --every seconds and expects them back), then
runs two phases of S seconds; when the second starts it creates FILE (the orchestrator floods
then). Most real connections are idle most of the time, and an idle flow is the first an LRU
table evicts, so both kinds are watched. A flow is broken when its connection errors (RST,
timeout), closes, or delivers nothing (bulk) / no echo (idle) for STALL_S seconds. Writes bytes
per phase and flow.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import time

STALL_S = 3.0
CHUNK = 1 << 18
PING = b"0123456789abcdef"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("--bulk-port", type=int, required=True)
    ap.add_argument("--bulk", type=int, default=8)
    ap.add_argument("--echo-port", type=int, required=True)
    ap.add_argument("--idle", type=int, default=64)
    ap.add_argument("--every", type=float, default=5.0, help="idle flows' echo interval (s)")
    ap.add_argument("--phase-s", type=float, default=10.0)
    ap.add_argument("--mark", required=True, help="file created when the second phase starts")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    kinds: list[str] = []
    for kind, port, n in (("bulk", args.bulk_port, args.bulk), ("idle", args.echo_port, args.idle)):
        for _ in range(n):
            s = socket.create_connection((args.host, port), timeout=5)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, len(socks))
            socks.append(s)
            kinds.append(kind)
    n = len(socks)
    got = [[0, 0] for _ in range(n)]  # bytes per phase
    now = time.monotonic()
    last = [now] * n  # last progress: data (bulk) or a complete echo (idle)
    sent_at = [0.0] * n
    owed = [0] * n  # echo bytes still expected
    broken: dict[int, str] = {}
    buf = bytearray(CHUNK)
    t0 = now
    phase = 0
    end = t0 + 2 * args.phase_s

    def fail(i: int, why: str) -> None:
        broken[i] = f"{kinds[i]}: {why}"
        sel.unregister(socks[i])

    while (now := time.monotonic()) < end:
        if phase == 0 and now >= t0 + args.phase_s:
            phase = 1
            with open(args.mark, "w"):
                pass
        for i in range(n):
            if i in broken or kinds[i] != "idle" or owed[i] or now - sent_at[i] < args.every:
                continue
            try:
                socks[i].send(PING)
            except OSError as exc:
                fail(i, f"{type(exc).__name__}: {exc}")
                continue
            sent_at[i], owed[i] = now, len(PING)
        for key, _ in sel.select(timeout=0.1):
            i = key.data
            try:
                k = socks[i].recv_into(buf)
            except BlockingIOError:
                continue
            except OSError as exc:
                fail(i, f"{type(exc).__name__}: {exc}")
                continue
            if k == 0:
                fail(i, "closed by peer")
                continue
            got[i][phase] += k
            if kinds[i] == "idle":
                owed[i] = max(0, owed[i] - k)
                if owed[i] == 0:
                    last[i] = now
            else:
                last[i] = now
        for i in range(n):
            if i in broken:
                continue
            if kinds[i] == "bulk" and now - last[i] > STALL_S:
                fail(i, f"no data for {STALL_S:.0f} s")
            elif kinds[i] == "idle" and owed[i] and now - sent_at[i] > STALL_S:
                fail(i, f"no echo within {STALL_S:.0f} s")
    for s in socks:
        s.close()
    with open(args.json, "w") as f:
        json.dump({"kinds": kinds, "phase_s": args.phase_s, "bytes": got,
                   "broken": {str(k): v for k, v in broken.items()}}, f)


if __name__ == "__main__":
    main()
