"""IPv6 and NAT64 rules through the engine into the real eBPF maps: what the datapath reads
(service key, live version, endpoints with their family and source address, allowed sources)
is read back with layout.py. No traffic here: the v6 packet path is checked by its own tests."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from pyloxi.datapath.ebpf import layout as L
from pyloxi.datapath.ebpf.backend import EbpfDatapath
from pyloxi.engine import Engine
from pyloxi.model.errors import PyloxiError
from pyloxi.model.lb import LoadBalancerEntry, NatMode

from .conftest import OBJ

VIP6 = "2001:db8::10"
LOCAL4, LOCAL6 = "10.0.11.1", "2001:db8:11::1"


def source(ip: str) -> str | None:
    """The host's address toward an endpoint, of its family (as `ip route get` answers)."""
    return LOCAL6 if ":" in ip else LOCAL4


@pytest.fixture
def dp(netns: str) -> Iterator[EbpfDatapath]:
    d = EbpfDatapath(f"/sys/fs/bpf/pl{os.getpid()}-v6", obj_path=OBJ)
    try:
        yield d
    finally:
        d.destroy()


@pytest.fixture
def eng(dp: EbpfDatapath) -> Engine:
    return Engine(dp, snat_source=source)


def rule(vip: str, port: int, eps: list[str], **args: object) -> LoadBalancerEntry:
    extra = {k: args.pop(k) for k in ("allowedSources",) if k in args}
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": "tcp", **args},
        "endpoints": [{"endpointIP": ip, "targetPort": 8080, "weight": 1} for ip in eps],
        **extra,
    })


def u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def live_version(dp: EbpfDatapath, vip: str, port: int) -> tuple[int, L.SvcVer]:
    """(version id, version) a packet to vip:port/tcp reads, found as the program finds it."""
    raw, fam = L.addr(vip)
    key = L.SvcKey(vip=L.Addr.from_buffer_copy(raw), port=L.port_n(port), proto=6, family=fam)
    val = dp.maps["svc_map"].lookup(bytes(key))
    assert val is not None, f"no service key for {vip}:{port}"
    svc = L.SvcVal.from_buffer_copy(val).svc_id
    gen = int.from_bytes(dp.maps["gen_map"].lookup(u32(svc)) or bytes(4), "little") & 1
    ver_id = svc * 2 + gen
    ver = dp.maps["ver_map"].lookup(u32(ver_id))
    assert ver is not None
    return ver_id, L.SvcVer.from_buffer_copy(ver)


def endpoints(dp: EbpfDatapath, ver: L.SvcVer,
              n: int) -> list[tuple[str, int, str | None, int]]:
    """(ip, family, snat ip or None, port) of the first n endpoints, from the raw bytes."""
    out = []
    for e in dp.version_eps(ver.cfg)[:n]:
        snat = bytes(e.snat_ip)
        out.append((L.addr_text(bytes(e.ip)), e.family,
                    None if snat == L.ADDR_ZERO else L.addr_text(snat), L.n_port(e.port)))
    return out


def test_nat66_rule_in_the_maps(eng: Engine, dp: EbpfDatapath) -> None:
    eng.add_rule(rule(VIP6, 80, ["2001:db8:11::2", "2001:db8:11::3"], mode=NatMode.FULLNAT,
                      allowedSources=[{"prefix": "2001:db8:c::/48"}]))
    ver_id, ver = live_version(dp, VIP6, 80)
    assert ver.cfg.family == L.AF_INET6 and ver.cfg.mode == NatMode.FULLNAT
    assert bytes(ver.cfg.vip) == socket.inet_pton(socket.AF_INET6, VIP6)
    # fullnat v6 -> v6: the VIP is the source
    assert endpoints(dp, ver, 2) == [("2001:db8:11::2", L.AF_INET6, VIP6, 8080),
                                 ("2001:db8:11::3", L.AF_INET6, VIP6, 8080)]
    assert ver.cfg.flags & L.SVC_F_ALLOWLIST
    allow = {bytes(k) for k in dp.maps["allow_map"]}
    assert bytes(L.allow_key(ver_id, "2001:db8:c::/48")) in allow
    (key,) = [L.SvcKey.from_buffer_copy(k) for k in dp.maps["svc_map"]]
    assert (L.addr_text(bytes(key.vip)), key.family, L.n_port(key.port)) == (VIP6, L.AF_INET6, 80)


@pytest.mark.parametrize("mode", [NatMode.DEFAULT, NatMode.ONEARM, NatMode.FULLNAT])
def test_nat64_rule_in_the_maps(eng: Engine, dp: EbpfDatapath, mode: NatMode) -> None:
    eng.add_rule(rule(VIP6, 81, ["10.0.11.2", "10.0.11.3"], mode=mode))
    _, ver = live_version(dp, VIP6, 81)
    # the service is IPv6 (its key and config), its endpoints and their source IPv4
    assert ver.cfg.family == L.AF_INET6 and ver.cfg.mode == mode
    assert endpoints(dp, ver, 2) == [("10.0.11.2", L.AF_INET, LOCAL4, 8080),
                                 ("10.0.11.3", L.AF_INET, LOCAL4, 8080)]
    # stored IPv4-mapped
    assert bytes(dp.version_eps(ver.cfg)[0].snat_ip)[:12] == bytes(10) + b"\xff\xff"


def test_v4_and_v6_rules_side_by_side_and_removed(eng: Engine, dp: EbpfDatapath) -> None:
    eng.add_rule(rule(VIP6, 80, ["2001:db8:11::2"]))
    eng.add_rule(rule("20.0.0.100", 80, ["10.0.11.2"]))
    _, v6 = live_version(dp, VIP6, 80)
    _, v4 = live_version(dp, "20.0.0.100", 80)
    assert (v6.cfg.family, v4.cfg.family) == (L.AF_INET6, L.AF_INET)
    assert endpoints(dp, v6, 1) == [("2001:db8:11::2", L.AF_INET6, None, 8080)]
    assert endpoints(dp, v4, 1) == [("10.0.11.2", L.AF_INET, None, 8080)]
    eng.delete_rule(VIP6, 80, "tcp")
    keys = [L.SvcKey.from_buffer_copy(k) for k in dp.maps["svc_map"]]
    assert [(L.addr_text(bytes(k.vip)), k.family) for k in keys] == [("20.0.0.100", L.AF_INET)]


def test_refused_rule_leaves_the_maps_alone(eng: Engine, dp: EbpfDatapath) -> None:
    eng.add_rule(rule(VIP6, 80, ["2001:db8:11::2"]))
    before = sorted(dp.maps["svc_map"].lookup_batch(65536))
    with pytest.raises(PyloxiError, match="nat46 error"):
        eng.add_rule(rule("20.0.0.100", 80, ["2001:db8:11::2"]))
    with pytest.raises(PyloxiError, match="cannot do NAT64"):
        eng.add_rule(rule(VIP6, 8080, ["10.0.11.2"], mode=NatMode.DSR, sel=1))
    assert sorted(dp.maps["svc_map"].lookup_batch(65536)) == before
