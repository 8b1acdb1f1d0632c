"""Gratuitous ARP for v4 VIPs that become local (ndp.announce is the v6 counterpart).

When an HA instance turns MASTER on this node, its VIPs become local here; neighbours (the
router, clients on the link) still hold the previous master's MAC for them. A gratuitous ARP
request (sender = target = VIP, to the broadcast address) updates their existing entries at
once, as keepalived and loxilb (NetAdvertiseVIPReqWithCtx) do; a kernel creates no new entry
from it unless arp_accept is set, so hosts that never talked to the VIP are left alone.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

from pyloxi.host.ndp import hwaddr

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ARP_REQUEST = 1
BROADCAST = b"\xff" * 6


def gratuitous_arp(vip: str, mac: bytes) -> bytes:
    """The Ethernet frame of a gratuitous ARP request for `vip` owned by `mac`."""
    ip = ipaddress.IPv4Address(vip).packed
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, ARP_REQUEST) + mac + ip + b"\x00" * 6 + ip
    return eth + arp


def announce(vips: Iterable[str], interfaces: Iterable[str]) -> int:
    """Send a gratuitous ARP for each v4 VIP on each Ethernet interface; return how many."""
    targets = sorted(v for v in vips if ":" not in v)
    if not targets:
        return 0
    sent = 0
    for ifname in interfaces:
        mac = hwaddr(ifname)
        if mac is None:
            continue  # no link layer address (lo, tun...) or gone: no ARP there
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
                s.bind((ifname, 0))
                for vip in targets:
                    s.send(gratuitous_arp(vip, mac))
                    sent += 1
        except OSError as exc:  # interface down or gone: its neighbours hear nothing
            log.warning("gratuitous ARP on %s: %s", ifname, exc)
    return sent
