"""Client-side traffic helpers: who answered, from the client namespace."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from pyloxi.testing.lab import Netns

_HTTP_LOOP = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lport = int(sys.argv[4]) if len(sys.argv) > 4 else 0
req = ("GET / HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n" % host).encode()
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
for i in range(n):
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(5)
    try:
        if lport:
            s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", lport))
        s.connect((host, port))
        s.sendall(req)
        data = b""
        while chunk := s.recv(65536):  # read to EOF: the server closes first
            data += chunk
        print(data.split(b"\\r\\n\\r\\n", 1)[1].decode().strip())
    except Exception as e:
        print("ERR", type(e).__name__, str(e).replace(" ", "_"))
    finally:
        s.close()
"""

_UDP_LOOP = """
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
used = set()
for i in range(n):
    # A fresh source port each time: an ephemeral port the kernel hands out again would be
    # the same 5-tuple, i.e. the same (still live) UDP flow, and no new selection.
    while True:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("", 0))
        if s.getsockname()[1] not in used:
            break
        s.close()
    used.add(s.getsockname()[1])
    s.settimeout(5)  # generous: CI may be busy
    s.sendto(b"hi", (host, port))
    try:
        print(s.recvfrom(2048)[0].decode().split()[0] + " -")
    except OSError:
        print("ERR timeout")
    s.close()
"""


def http_answers(client: Netns, vip: str, n: int, port: int = 80,
                 local_port: int = 0) -> list[tuple[str, str]]:
    """n sequential requests, each on a new connection; [(backend, address it saw)]."""
    argv = [sys.executable, "-c", _HTTP_LOOP, vip, str(port), str(n)]
    if local_port:
        argv.append(str(local_port))
    out = client.run(argv, timeout=120).stdout.split("\n")
    return [tuple(line.split()[:2]) for line in out if line]  # type: ignore[misc]


def udp_answers(client: Netns, vip: str, n: int, port: int = 5353) -> list[str]:
    out = client.run([sys.executable, "-c", _UDP_LOOP, vip, str(port), str(n)],
                     timeout=120).stdout.split("\n")
    return [line.split()[0] for line in out if line]


# GET /big.bin read at ~3 MB/s until the file argv[3] exists, then as fast as it comes: the
# transfer lasts through whatever the test does to the LB, and the test need not wait for the
# rest at 3 MB/s once it is done. Prints "<body bytes> <status>" as curl -w would.
_PACED_GET = """
import os, socket, sys, time
vip, path, fast = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.create_connection((vip, 80), timeout=30)
s.sendall(b"GET " + path.encode() + b" HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
head = b""
while b"\\r\\n\\r\\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
head, body = head.split(b"\\r\\n\\r\\n", 1)
got, slow = len(body), True
while True:
    chunk = s.recv(65536 if not slow else 12288)
    if not chunk:
        break
    got += len(chunk)
    if slow:
        slow = not os.path.exists(fast)
        time.sleep(0.004)
print(got, head.split()[1].decode())
"""


def paced_download(client: Netns, vip: str, path: str, fast_flag: str) -> subprocess.Popen[bytes]:
    """A download from http://vip/path that is slow (~3 MB/s) until `fast_flag` is created."""
    return client.popen([sys.executable, "-c", _PACED_GET, vip, path, fast_flag],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def spread(answers: list[str]) -> Counter[str]:
    return Counter(answers)
