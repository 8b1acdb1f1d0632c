"""The daemon's composition, without root: the host-facing pieces (bpffs, sysctls, netlink, the
eBPF datapath) are replaced by fakes; the store, engine, API, probes and StateSync are real."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

import pyloxi.daemon as daemon_mod
from pyloxi.bpf import ObjectMissing
from pyloxi.daemon import Daemon, main, parse_args
from pyloxi.datapath.memory import MemoryDatapath
from pyloxi.engine.program import ServiceProgram
from pyloxi.host.locks import LockError
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes.types import ProbeTarget

WAIT_S = 10


def rule(vip: str = "20.0.0.1", port: int = 80) -> LoadBalancerEntry:
    return LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": vip, "port": port, "protocol": "tcp"},
        "endpoints": [{"endpointIP": "10.0.11.2", "targetPort": 8080, "weight": 1}],
    })


class FakeDatapath(MemoryDatapath):
    """The EbpfDatapath calls the daemon makes beyond the Datapath protocol, recorded."""

    fail_first_install: Exception | None = None  # set on the class by a test

    def __init__(self, pin_dir: str, *, obj_path: str, ct_entries: int | None,
                 ct_half_entries: int | None, interfaces: Sequence[str],
                 dsr_tunnel_source: Callable[[str], str | None] | None = None) -> None:
        super().__init__()
        self.opened: dict[str, Any] = {"pin_dir": pin_dir, "obj_path": obj_path,
                                       "ct_entries": ct_entries,
                                       "ct_half_entries": ct_half_entries,
                                       "interfaces": list(interfaces)}
        self.fail_install = type(self).fail_first_install
        self.attached: list[str] = []
        self.attach_mode = ""
        self.pruned = 0
        self.aging_prepared = 0
        self.destroyed = False
        self.resets: list[tuple[str, int]] = []

    def attach(self, interfaces: Sequence[str], datapath: str = "tc") -> None:
        self.attached = list(interfaces)
        self.attach_mode = datapath

    def install_service(self, prog: ServiceProgram) -> None:
        # the first service install fails, not the tables (firewall...) set up before it
        if self.fail_install is not None:
            exc, self.fail_install = self.fail_install, None
            raise exc
        super().install_service(prog)

    def prune_orphans(self) -> None:
        self.pruned += 1

    def prepare_aging(self) -> None:
        self.aging_prepared += 1

    def reset_endpoint_flows(self, ip: str, port: int) -> int:
        self.resets.append((ip, port))
        return 1

    def destroy(self) -> None:
        self.destroyed = True


class FakeVips:
    interfaces: list[str]

    def __init__(self) -> None:
        self.owned: set[str] = set()
        self.syncs: list[set[str]] = []
        self.changes: list[tuple[set[str], set[str]]] = []

    def sync(self, vips: set[str]) -> None:
        self.syncs.append(set(vips))
        self.owned = set(vips)

    def change(self, add: set[str], remove: set[str]) -> None:
        self.changes.append((set(add), set(remove)))
        self.owned = (self.owned | add) - remove


class Host:
    """What the daemon did to the (fake) host."""

    def __init__(self) -> None:
        self.bpffs: list[str] = []
        self.prepared: list[list[str]] = []
        self.datapaths: list[FakeDatapath] = []
        self.vips: list[FakeVips] = []
        self.netns: list[str] = []


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    h = Host()

    def datapath(*args: Any, **kwargs: Any) -> FakeDatapath:
        dp = FakeDatapath(*args, **kwargs)
        h.datapaths.append(dp)
        return dp

    def vips(interfaces: list[str]) -> FakeVips:
        v = FakeVips()
        v.interfaces = interfaces
        h.vips.append(v)
        return v

    monkeypatch.setattr(daemon_mod, "_ensure_bpffs", h.bpffs.append)
    monkeypatch.setattr(daemon_mod, "default_interfaces", lambda: ["eth0", "eth1"])
    monkeypatch.setattr(daemon_mod, "prepare_host", h.prepared.append)
    monkeypatch.setattr(daemon_mod, "EbpfDatapath", datapath)
    monkeypatch.setattr(daemon_mod, "VipPlumber", vips)
    monkeypatch.setattr(daemon_mod, "source_address", lambda dst: "192.0.2.1")
    monkeypatch.setattr(daemon_mod, "enter_netns", h.netns.append)
    monkeypatch.setattr(daemon_mod, "share_host_mounts", lambda: False)
    monkeypatch.delenv("PYLOXI_BPF_OBJECT", raising=False)
    yield h
    FakeDatapath.fail_first_install = None


@pytest.fixture
def obj(tmp_path: Path) -> str:
    path = tmp_path / "lb.bpf.o"
    path.write_bytes(b"\x7fELF")
    return str(path)


@pytest.fixture
def argv(tmp_path: Path, obj: str) -> list[str]:
    return ["--state-dir", str(tmp_path / "state"), "--bpffs", str(tmp_path / "pins"),
            "--bpf-object", obj]


@pytest.fixture
def make(argv: list[str], host: Host) -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(*extra: str) -> Daemon:
        d = Daemon(parse_args([*argv, *extra]))
        made.append(d)
        return d

    yield make
    for d in made:
        d.sync.stop()
        d.store.close()
        for lock in d.locks:
            lock.release()


def stopped(d: Daemon) -> None:
    """As main() does after run(): shutdown, then (the process would exit) the locks go."""
    d.shutdown()
    for lock in d.locks:
        lock.release()


def test_parse_args_defaults() -> None:
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 11111)
    assert (args.state_dir, args.bpffs) == ("/var/lib/pyloxi", "/sys/fs/bpf/pyloxi")
    assert args.bpf_object is None  # resolved at start: flag > $PYLOXI_BPF_OBJECT > installed
    assert args.interfaces == "" and args.netns == ""
    assert not args.cleanup_on_exit and args.endpoint_down == "drain"
    assert args.conntrack_entries is None and args.conntrack_half_open is None
    assert args.log_level == "info"


def test_parse_args_flags() -> None:
    args = parse_args(["--host", "0.0.0.0", "--port", "8080", "--interfaces", "a,b",
                       "--endpoint-down", "reset", "--conntrack-entries", "4096",
                       "--conntrack-half-open", "512", "--cleanup-on-exit",
                       "--log-level", "debug", "--netns", "lb"])
    assert (args.host, args.port, args.interfaces) == ("0.0.0.0", 8080, "a,b")
    assert (args.endpoint_down, args.conntrack_entries, args.conntrack_half_open) == (
        "reset", 4096, 512)
    assert args.cleanup_on_exit and args.log_level == "debug" and args.netns == "lb"


def test_parse_args_bgp() -> None:
    args = parse_args(["--bgp", "--bgp-api", "127.0.0.1:50100", "--bgp-timers", "3,1,1"])
    assert args.bgp and args.bgp_api == "127.0.0.1:50100" and not args.bgp_attach
    assert (args.bgp_timers.hold, args.bgp_timers.keepalive,
            args.bgp_timers.connect_retry) == (3, 1, 1)
    assert not parse_args([]).bgp


@pytest.mark.parametrize("bad", [["--port", "x"], ["--endpoint-down", "cut"],
                                 ["--bgp-timers", "3,1"], ["--bgp-timers", "3,3,1"],
                                 ["--self", "x"]])
def test_parse_args_refuses(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(bad)
    assert exc.value.code == 2


def test_start_wires_the_host(make: Callable[..., Daemon], host: Host, obj: str,
                              tmp_path: Path) -> None:
    d = make("--conntrack-entries", "4096")
    (dp,) = host.datapaths
    assert host.bpffs == [str(tmp_path / "pins")]
    assert host.prepared == [["eth0", "eth1"]]  # every interface but lo (default_interfaces)
    assert dp.opened == {"pin_dir": str(tmp_path / "pins"), "obj_path": obj,
                         "ct_entries": 4096, "ct_half_entries": None,
                         "interfaces": ["eth0", "eth1"]}
    assert dp.attached == ["eth0", "eth1"] and dp.pruned == 1
    assert host.vips[0].syncs == [set()]  # no rules: stale VIPs of an earlier run are dropped
    assert d.engine.entries() == []


def test_interfaces_flag(make: Callable[..., Daemon], host: Host) -> None:
    make("--interfaces", "veth1,,veth2")
    assert host.prepared == [["veth1", "veth2"]]
    assert host.datapaths[0].attached == ["veth1", "veth2"]
    assert host.vips[0].interfaces == ["veth1", "veth2"]  # where v6 VIPs answer NS
    assert host.datapaths[0].attach_mode == "tc"  # the XDP fast path only when asked


def test_rules_survive_a_restart(make: Callable[..., Daemon], host: Host) -> None:
    first = make()
    first.engine.add_rule(rule("20.0.0.1"))
    first.engine.add_rule(rule("20.0.0.2", port=443))
    stopped(first)
    assert host.datapaths[0].closed and not host.datapaths[0].destroyed

    second = make()
    assert {e.service_arguments.external_ip for e in second.engine.entries()} == {
        "20.0.0.1", "20.0.0.2"}
    assert host.vips[1].syncs == [{"20.0.0.1", "20.0.0.2"}]
    assert len(host.datapaths[1].services) == 2


def test_a_second_daemon_on_the_same_state_dir_is_refused(make: Callable[..., Daemon],
                                                          host: Host) -> None:
    make()
    with pytest.raises(LockError, match="state directory"):
        make()
    assert len(host.datapaths) == 1  # refused before touching the datapath


def test_missing_object_stops_before_anything_is_touched(argv: list[str], host: Host,
                                                         tmp_path: Path) -> None:
    args = parse_args([*argv, "--bpf-object", str(tmp_path / "nope.o")])
    with pytest.raises(ObjectMissing, match="nope.o"):
        Daemon(args)
    assert not (tmp_path / "state").exists() and host.bpffs == [] and host.datapaths == []


def test_main_reports_a_failed_start(argv: list[str], host: Host, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    rc = main([*argv, "--netns", "lbns", "--bpf-object", str(tmp_path / "nope.o")])
    assert rc == 1
    assert host.netns == ["lbns"]
    assert "cannot start" in caplog.text and "nope.o" in caplog.text


def test_shutdown_keeps_the_datapath_by_default(make: Callable[..., Daemon],
                                                host: Host) -> None:
    d = make()
    d.engine.add_rule(rule())
    stopped(d)
    dp, vips = host.datapaths[0], host.vips[0]
    assert dp.closed and not dp.destroyed
    assert vips.owned == {"20.0.0.1"}  # flushed on the way out, and left in place


def test_cleanup_on_exit_removes_vips_and_datapath(make: Callable[..., Daemon],
                                                   host: Host) -> None:
    d = make("--cleanup-on-exit")
    d.engine.add_rule(rule())
    stopped(d)
    assert host.datapaths[0].destroyed
    assert host.vips[0].syncs[-1] == set() and host.vips[0].owned == set()


def verdict(d: Daemon, target: ProbeTarget, up: bool) -> None:
    """What the probe manager does with a verdict: the daemon's sink applies it, in order."""
    assert d.probes.on_change is not None
    asyncio.run(d.probes.on_change(target, up, "test"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "resets"), [("drain", []), ("reset", [("10.0.11.2", 8080)])])
def test_verdict_reaches_the_engine(make: Callable[..., Daemon], host: Host, mode: str,
                                    resets: list[tuple[str, int]]) -> None:
    d = make("--endpoint-down", mode)
    d.engine.add_rule(rule())
    target = ProbeTarget("10.0.11.2_tcp_8080", "10.0.11.2", "tcp", 8080, ep_proto="tcp",
                         ep_port=8080)
    verdict(d, target, up=False)
    assert host.datapaths[0].resets == resets
    (entry,) = d.engine.list_rules()
    assert [ep.state for ep in entry.endpoints] == ["inactive"]
    verdict(d, target, up=True)
    (entry,) = d.engine.list_rules()
    assert [ep.state for ep in entry.endpoints] == ["active"]


def test_a_failing_verdict_is_logged(make: Callable[..., Daemon],
                                     caplog: pytest.LogCaptureFixture) -> None:
    d = make()
    verdict(d, ProbeTarget("bad", "not-an-ip", "tcp", 80, ep_proto="tcp"), up=False)
    assert "could not apply the verdict on bad" in caplog.text


def test_api_only_hosts_reach_no_rule(make: Callable[..., Daemon], host: Host) -> None:
    d = make("--endpoint-down", "reset")
    d.engine.add_rule(rule())
    verdict(d, ProbeTarget("host1", "10.0.11.2", "ping"), up=False)  # monitored through the API
    assert host.datapaths[0].resets == []
    (entry,) = d.engine.list_rules()
    assert [ep.state for ep in entry.endpoints] == ["active"]


class Once:
    """Wraps a method: records calls, signals each one, and can raise on the first."""

    def __init__(self, fn: Callable[[], Any], fail_first: Exception | None = None) -> None:
        self.fn = fn
        self.fail_first = fail_first
        self.calls = threading.Semaphore(0)

    def __call__(self) -> Any:
        try:
            if self.fail_first is not None:
                exc, self.fail_first = self.fail_first, None
                raise exc
            return self.fn()
        finally:
            self.calls.release()

    async def wait(self) -> None:
        assert await asyncio.to_thread(self.calls.acquire, True, WAIT_S), "never called"


async def test_parked_rules_are_retried(make: Callable[..., Daemon], host: Host,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = make()
    first.engine.add_rule(rule())
    stopped(first)
    FakeDatapath.fail_first_install = OSError("interface has no address yet")
    d = make()
    assert len(d.engine.parked()) == 1 and host.datapaths[1].services == {}
    monkeypatch.setattr(daemon_mod, "RETRY_MIN_S", 0.0)
    retry = Once(d.engine.retry_parked, fail_first=RuntimeError("boom"))
    monkeypatch.setattr(d.engine, "retry_parked", retry)
    task = asyncio.create_task(d._retry_loop())
    await retry.wait()  # raised: logged, tried again
    await retry.wait()
    assert d.engine.parked() == [] and len(host.datapaths[1].services) == 1
    d._stop.set()
    await asyncio.wait_for(task, WAIT_S)


async def test_aging_loop_survives_a_failure(make: Callable[..., Daemon], host: Host,
                                             monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    d = make()
    monkeypatch.setattr(daemon_mod, "AGING_PERIOD_S", 0.0)
    age = Once(d.engine.age, fail_first=RuntimeError("map read failed"))
    monkeypatch.setattr(d.engine, "age", age)
    task = asyncio.create_task(d._aging_loop())
    await age.wait()
    await age.wait()
    d._stop.set()
    await asyncio.wait_for(task, WAIT_S)
    assert "conntrack aging failed" in caplog.text
    assert host.datapaths[0].aging_prepared == 1  # the sweep's buffers, once, before it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_serves_the_api_until_stopped(make: Callable[..., Daemon], host: Host) -> None:
    port = free_port()
    d = make("--port", str(port))
    d.engine.add_rule(rule())
    task = asyncio.create_task(d.run())
    url = f"http://127.0.0.1:{port}/netlox/v1"
    async with httpx.AsyncClient() as client:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:  # uvicorn tells nobody when it listens: ask until it answers
            try:
                version = await client.get(f"{url}/version")
                break
            except httpx.TransportError:
                assert asyncio.get_running_loop().time() < deadline, "API never came up"
                await asyncio.sleep(0.05)
        assert version.status_code == 200
        await client.post(f"{url}/config/loadbalancer", json={
            "serviceArguments": {"externalIP": "20.0.0.9", "port": 80, "protocol": "tcp"},
            "endpoints": [{"endpointIP": "10.0.11.3", "targetPort": 80, "weight": 1}]})
    assert any(t.name == "state-sync" for t in threading.enumerate())
    d._stop.set()
    await asyncio.wait_for(task, WAIT_S)
    assert not any(t.name == "state-sync" for t in threading.enumerate())
    assert not d.probes.running
    stopped(d)
    assert host.vips[0].owned == {"20.0.0.1", "20.0.0.9"}


class FakeCtSync:
    """cluster.ctsync.CtSync as the daemon drives it."""

    def __init__(self, backend: object, peers: object = None) -> None:
        self.backend = backend
        self.peers = peers
        self.started: tuple[list[str], int, str] | None = None
        self.roles: list[str] = []
        self.stopped = False

    def start(self, peers: list[str], self_index: int, role: str = "BACKUP") -> None:
        self.started = (list(peers), self_index, role)

    def set_role(self, role: str) -> None:
        self.roles.append(role)

    def stop(self) -> None:
        self.stopped = True


def test_cluster_flags_start_ctsync_and_the_ha_state_sets_its_role(
        make: Callable[..., Daemon], host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeCtSync] = []
    monkeypatch.setattr(daemon_mod, "CtSync",
                        lambda b, peers=None: made.append(FakeCtSync(b, peers)) or made[-1])
    shares: list[tuple[int, int]] = []
    monkeypatch.setattr(FakeDatapath, "set_nat_share",
                        lambda self, i, n: shares.append((i, n)), raising=False)
    monkeypatch.setattr(FakeDatapath, "flow_sync", lambda self: "flows", raising=False)
    d = make("--cluster", "10.9.9.2", "--self", "1")
    d._start_ctsync()
    sync = made[0]
    # this node listens on all addresses at its index; no cistate call yet: it sends
    assert sync.started == (["10.9.9.2", "0.0.0.0"], 1, "MASTER")
    assert shares == [(1, 2)] and sync.backend == "flows"
    assert sync.peers is d.peers and d.peers is not None and d.peers.self_index == 1
    d.cluster.set_state("llb-inst0", "BACKUP")
    d.cluster.set_state("llb-inst0", "MASTER")
    assert sync.roles == ["BACKUP", "MASTER"]


def test_instance_ip_is_the_fullnat_source_told_to_peers_and_announced(
        make: Callable[..., Daemon], host: Host) -> None:
    """cistate vip = this node's instance IP: fullnat flows are source-NATed to it (re-planned
    when it changes), the control channel tells the peers, BGP announces it (and theirs)."""
    d = make("--cluster", "10.9.9.2", "--self", "0")
    d.engine.add_rule(LoadBalancerEntry.model_validate({
        "serviceArguments": {"externalIP": "20.0.0.1", "port": 80, "protocol": "tcp",
                             "mode": 2},
        "endpoints": [{"endpointIP": "10.0.0.5", "targetPort": 80, "weight": 1}]}))

    def source() -> set[str | None]:
        return {e.snat_ip for p in d.engine.programs() for e in p.endpoints}

    assert source() == {"20.0.0.1"}  # no instance IP yet: the VIP
    d.cluster.set_state("llb-inst0", "MASTER", "10.90.0.1")
    assert source() == {"10.90.0.1"}
    assert d.peers is not None
    frame = json.loads(d.peers.frame())
    assert frame["node"] == 0
    assert frame["sections"]["instance"] == {"llb-inst0": "10.90.0.1"}
    d.peers.on_frame(b'{"node": 1, "sections": {"instance": {"llb-inst0": "10.90.0.2"}}}')
    assert d.instance_ips.paths() == {"10.90.0.1": (5000, 10), "10.90.0.2": (100, 20)}


def test_no_cluster_no_ctsync(make: Callable[..., Daemon], host: Host) -> None:
    d = make()
    d._start_ctsync()
    assert d.ctsync is None


def test_cluster_verdicts_go_through_the_majority(make: Callable[..., Daemon]) -> None:
    """--cluster: a local down verdict outvoted by the peers never reaches the engine; the peers
    gone, the local verdict decides. GET /cluster/status shows the disagreement meanwhile."""
    d = make("--cluster", "10.9.9.2,10.9.9.3", "--self", "0")
    assert d.agreement is not None
    d.engine.add_rule(rule())
    target = ProbeTarget("10.0.11.2_tcp_8080", "10.0.11.2", "tcp", 8080, ep_proto="tcp",
                         ep_port=8080)
    d.probes.upsert(target)
    views = d.agreement.views
    for peer in (1, 2):
        views.receive(peer, {"v": 1, "eps": {"tcp 10.0.11.2:8080": "up"}})
    d.probes._entries[target.key].verdict.up = False  # what a failed probe leaves behind
    d.probes.on_change(target, False, "test")  # type: ignore[misc]

    def states() -> list[str]:
        return [ep.state for ep in d.engine.list_rules()[0].endpoints]

    d._verdicts.submit(lambda: None).result(WAIT_S)  # whatever was decided has been applied
    assert states() == ["active"]

    async def status() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=d.app),
                                     base_url="http://x") as http:
            return (await http.get("/netlox/v1/cluster/status")).json()

    body = asyncio.run(status())
    assert body["probeDisagreements"][0]["endpoint"] == "tcp 10.0.11.2:8080"
    assert body["probeDisagreements"][0]["effective"] == "up"
    views.receive(1, {})
    views.receive(2, {})
    d._verdicts.submit(lambda: None).result(WAIT_S)
    assert states() == ["inactive"]


def test_no_cluster_no_status_peers(make: Callable[..., Daemon]) -> None:
    d = make()
    assert d.agreement is None


# ------------------------------------------------------------------ API security (TLS, tokens)


def test_parse_args_api_security() -> None:
    args = parse_args([])
    assert not args.tls and args.tls_host is None and args.tls_port == 8091
    assert (args.tls_certificate, args.tls_key) == ("/opt/loxilb/cert/server.crt",
                                                    "/opt/loxilb/cert/server.key")
    assert not args.manualtoken and args.token_file is None
    assert daemon_mod.token_file(args) is None


def test_manualtoken_reads_loxilbs_file_by_default(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manual_token"
    path.write_text("tok-123456\n")
    monkeypatch.setattr(daemon_mod, "DEFAULT_TOKEN_FILE", str(path))
    tokens = daemon_mod.token_file(parse_args(["--manualtoken"]))
    assert tokens is not None and tokens.path == path and tokens.accepts(b"tok-123456")


@pytest.mark.parametrize("extra, words", [
    (["--tls", "--tls-certificate", "/nonexistent.crt"], "--tls-certificate"),
    (["--token-file", "/nonexistent/tokens"], "token file"),
])
def test_bad_security_files_stop_before_anything_is_touched(
        argv: list[str], host: Host, tmp_path: Path, extra: list[str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Daemon(parse_args([*argv, *extra]))
    assert not (tmp_path / "state").exists() and host.bpffs == [] and host.datapaths == []


def test_a_key_that_does_not_match_stops_the_start(argv: list[str], host: Host,
                                                   tmp_path: Path) -> None:
    tls = pytest.importorskip("pyloxi.testing.tls")
    if not tls.have_openssl():
        pytest.skip("needs openssl")
    one = tls.make_certs(tmp_path / "one")
    two = tls.make_certs(tmp_path / "two")
    with pytest.raises(ValueError, match="cannot load"):
        Daemon(parse_args([*argv, "--tls", "--tls-certificate", one.cert,
                           "--tls-key", two.key]))
    assert host.datapaths == []


def test_exposed_without_tokens_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    daemon_mod.token_file(parse_args(["--host", "0.0.0.0"]))
    assert "without authentication" in caplog.text
    caplog.clear()
    daemon_mod.token_file(parse_args(["--tls", "--tls-host", "10.0.0.1"]))
    assert "without authentication" in caplog.text
    caplog.clear()
    daemon_mod.token_file(parse_args(["--tls"]))  # both on 127.0.0.1
    assert caplog.text == ""


async def test_run_serves_https_and_plain_both_needing_the_token(
        make: Callable[..., Daemon], tmp_path: Path) -> None:
    import ssl

    from pyloxi.testing.tls import have_openssl, make_certs
    if not have_openssl():
        pytest.skip("needs openssl")
    certs = make_certs(tmp_path / "certs")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-abcdefgh\n")
    port, tls_port = free_port(), free_port()
    d = make("--port", str(port), "--tls", "--tls-port", str(tls_port), "--tls-certificate",
             certs.cert, "--tls-key", certs.key, "--token-file", str(tokens))
    task = asyncio.create_task(d.run())
    https = f"https://localhost:{tls_port}/netlox/v1"
    plain = f"http://127.0.0.1:{port}/netlox/v1"
    body = {"serviceArguments": {"externalIP": "20.0.0.9", "port": 80, "protocol": "tcp"},
            "endpoints": [{"endpointIP": "10.0.11.3", "targetPort": 80, "weight": 1}]}
    auth = {"Authorization": "Bearer tok-abcdefgh"}
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=certs.ca)) as client:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:  # both listeners up
            try:
                await client.get(f"{https}/version")
                await client.get(f"{plain}/version")
                break
            except httpx.TransportError:
                assert asyncio.get_running_loop().time() < deadline, "API never came up"
                await asyncio.sleep(0.05)
        for url in (https, plain):
            resp = await client.post(f"{url}/config/loadbalancer", json=body)
            assert resp.status_code == 401
            assert resp.json()["message"] == "unauthenticated for invalid credentials"
        assert d.engine.list_rules() == []
        resp = await client.post(f"{https}/config/loadbalancer", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        listed = (await client.get(f"{plain}/config/loadbalancer/all", headers=auth)).json()
        assert [r["serviceArguments"]["externalIP"] for r in listed["lbAttr"]] == ["20.0.0.9"]
        # the https listener speaks only TLS: plain HTTP to it gets no API answer
        with pytest.raises(httpx.HTTPError):
            await client.get(f"http://127.0.0.1:{tls_port}/netlox/v1/version")
    d._stop.set()
    await asyncio.wait_for(task, WAIT_S)
    stopped(d)
