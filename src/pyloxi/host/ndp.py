"""IPv6 VIPs on the wire: neighbour discovery answers and unsolicited neighbour advertisements.

How a v6 VIP is made local (VipPlumber) and why: a `local VIP/128 dev lo` route, as for v4, plus
a proxy NDP entry (`ip -6 neigh add proxy VIP dev IF proto 250`) on each facing interface, with
`proxy_ndp=1`, `proxy_delay=0` and `forwarding=1` on those interfaces (prepare_ipv6).

Measured in a namespace (kernel 6.18, iproute2 6.1, one `ip -batch` each, veth):

    VIPs     local routes   proxy entries (1 if)   /128 nodad addresses on the interface
    1,000    0.013 s add    0.014 s add             1.1 s add      0.1 s del
    10,000   0.14 s add     0.56 s add, 0.65 del    29 s add      20 s del (noprefixroute: 47 s)

Through VipPlumber.change (routes + proxy entries + NAs, one interface): 1,000 v6 VIPs add
0.11 s, a restarted plumber finds them in 0.12 s, remove 0.03 s; 10,000 add 3.5 s (2.8 s of it
the 10,000 NAs into a veth, whose receiver runs in the sender's call), restart 1.3 s, remove
0.8 s. v4 unchanged: 10,000 add 0.13 s, remove 0.15 s.

- A local route alone does not answer NS (nor a /128 on lo): IPv6 has no "answer for any
  local address" like ARP. The proxy entry answers, but only on an interface with forwarding=1
  (ndisc_recv_ns checks the receiving device's forwarding; all.forwarding is not needed, and
  measured: per-interface forwarding suffices). The v6 datapath needs forwarding on those
  interfaces anyway: bpf_fib_lookup refuses v6 (FWD_DISABLED) on a device without it.
  proxy_delay=0, else the kernel delays each multicast NS answer by up to 0.8 s.
- Addresses (loxilb's way) answer NS without forwarding but cost 29 s / 20 s per 10,000
  (per-device address list and a solicited-node group join each), may be picked as the source
  of the host's own connections, and their owner mark (IFA_PROTO) is not settable with this
  iproute2 (`ip addr add ... proto` is refused by 6.1), so ownership would need per-message
  netlink from Python. Routes and proxy entries both carry protocol 250 through `ip -batch`.
- The kernel refuses what the datapath passes up for a v6 VIP with no live rule: measured TCP
  RST (connection refused) and ICMPv6 port unreachable (UDP) through the local route.
- Turning forwarding on makes an interface ignore router advertisements unless accept_ra=2,
  and the kernel drops RA-learned default routes (of interfaces whose accept_ra is not 2) when
  forwarding is switched on: facing interfaces with accept_ra=1 get accept_ra=2 first, so what
  RAs configure stays. Nothing of this happens on a host without v6 VIPs.

A VIP that appears is announced at once with an unsolicited NA (override flag, target = VIP,
to ff02::1, hop limit 255) from a raw ICMPv6 socket on each facing interface: neighbours that
cached another MAC for it (a previous holder) update without waiting for their entry to age.
(v4 VIPs get a gratuitous ARP instead: host.arp.)
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

log = logging.getLogger(__name__)

ND_NEIGHBOR_ADVERT = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LLADDR = 2
ALL_NODES = "ff02::1"
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1


def is_v6(vip: str) -> bool:
    return ":" in vip


def neighbour_advert(target: str, mac: bytes) -> bytes:
    """An unsolicited NA for `target` owned by `mac` (the kernel fills in the checksum)."""
    return (struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE)
            + ipaddress.IPv6Address(target).packed
            + struct.pack("!BB", ND_OPT_TARGET_LLADDR, 1) + mac)


def hwaddr(ifname: str) -> bytes | None:
    """The Ethernet address of `ifname` in this thread's namespace, None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR,
                              struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    family = struct.unpack_from("H", res, 16)[0]
    return res[18:24] if family == ARPHRD_ETHER else None


def announce(vips: Iterable[str], interfaces: Iterable[str]) -> int:
    """Send an unsolicited NA for each v6 VIP on each Ethernet interface; return how many."""
    targets = sorted(v for v in vips if is_v6(v))
    if not targets:
        return 0
    sent = 0
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        # receivers drop ND messages whose hop limit is not 255 (RFC 4861 7.1.2)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        for ifname in interfaces:
            mac = hwaddr(ifname)
            if mac is None:
                continue  # no link layer address (tun, ipip...) or gone: no NDP there
            try:
                index = socket.if_nametoindex(ifname)
                for vip in targets:
                    s.sendto(neighbour_advert(vip, mac), (ALL_NODES, 0, 0, index))
                    sent += 1
            except OSError as exc:  # interface down or gone: its neighbours hear nothing
                log.warning("unsolicited NA on %s: %s", ifname, exc)
    return sent


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        log.warning("%s=%s failed: %s", path, value, exc)
        return False
    return True


def prepare_ipv6(interfaces: Iterable[str]) -> list[str]:
    """What proxy NDP needs on the facing interfaces: accept_ra 1 -> 2 (RAs still configure
    the host once it forwards), forwarding=1, proxy_ndp=1, proxy_delay=0. Writes only what
    differs, logs what it wrote and returns it as key=value strings.

    /proc/sys is read through this thread's network namespace (unlike /sys, which shows the
    namespace it was mounted in), so this works under setns as well as `ip netns exec`."""
    done: list[str] = []
    for ifname in interfaces:
        conf = f"/proc/sys/net/ipv6/conf/{ifname}"
        if _read(f"{conf}/forwarding") is None:
            continue  # no IPv6 on this interface (disabled, or gone)
        settings = [(f"{conf}/accept_ra", "2")] if _read(f"{conf}/accept_ra") == "1" else []
        settings += [(f"{conf}/forwarding", "1"), (f"{conf}/proxy_ndp", "1"),
                     (f"/proc/sys/net/ipv6/neigh/{ifname}/proxy_delay", "0")]
        for path, value in settings:
            if _read(path) != value and _write(path, value):
                done.append(f"{path.removeprefix('/proc/sys/').replace('/', '.')}={value}")
    if done:
        log.info("host prepared for IPv6 VIPs (proxy NDP): %s", ", ".join(done))
    return done
