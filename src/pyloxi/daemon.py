"""`pyloxi daemon`: the composition root, the one module that wires the others together.

    store (desired rules) -> engine -> eBPF datapath (pinned maps, TC on every interface)
    REST API (uvicorn) -> engine;  aging loop -> datapath;  probes -> engine
    REST API (cistate) -> cluster state -> StateSync (the HA instances' VIPs local or not)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn

from pyloxi import __version__, oplog
from pyloxi.api.app import create_app
from pyloxi.api.auth import AuthApi
from pyloxi.api.bfd import bfd_router
from pyloxi.api.bgp import bgp_router
from pyloxi.api.cistate import cistate_router
from pyloxi.api.cluster import cluster_router
from pyloxi.api.endpoint import endpoint_router
from pyloxi.api.firewall import firewall_router
from pyloxi.api.logs import logs_router
from pyloxi.api.metrics import metrics_router
from pyloxi.api.mirror import mirror_router
from pyloxi.api.netcfg import netcfg_router
from pyloxi.api.params import params_router
from pyloxi.api.policy import policy_router
from pyloxi.api.security import TokenFile, check_tls_files, loopback_only, tls_server
from pyloxi.api.server import JoinedWritesHttpProtocol
from pyloxi.api.session import session_router
from pyloxi.api.users import user_store
from pyloxi.bgp import BgpSpeaker, Timers
from pyloxi.bpf import locate_object
from pyloxi.cluster import ClusterConfig, ClusterState, Instance
from pyloxi.cluster.activeactive import ActiveActive
from pyloxi.cluster.bfd import Bfd, SessionConfig, parse_ka
from pyloxi.cluster.ctsync import CtSync
from pyloxi.cluster.fingerprint import MaglevFingerprints
from pyloxi.cluster.instances import SECTION as INSTANCE_SECTION
from pyloxi.cluster.instances import InstanceIPs
from pyloxi.cluster.peers import ClusterPeers
from pyloxi.cluster.probeviews import ProbeViews
from pyloxi.datapath.ebpf.backend import EbpfDatapath, _ensure_bpffs
from pyloxi.datapath.ebpf.xdpattach import DATAPATHS
from pyloxi.engine import Engine
from pyloxi.engine.firewall import Firewall
from pyloxi.engine.heap import freeze_after_slow_collections
from pyloxi.engine.mirror import Mirrors
from pyloxi.engine.policer import Policers
from pyloxi.host.locks import DirLock
from pyloxi.host.namespaces import enter_netns, share_host_mounts
from pyloxi.host.netcfg import HostNetConfig
from pyloxi.host.netlink import (
    VipPlumber,
    default_interfaces,
    prepare_host,
    source_address,
    tunnel_source,
)
from pyloxi.metrics import VIEWS, MetricsExporter, Sources
from pyloxi.model.cluster import DEFAULT_INSTANCE, instance_of
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.model.status import LOG_LEVELS
from pyloxi.oplog import LogControl, LogSource
from pyloxi.probes import ProbeManager, ProbeTarget, engine_sink
from pyloxi.statesync import StateSync, rule_vips
from pyloxi.store import (
    SqliteStore,
    load_firewall,
    load_mirrors,
    load_policies,
    save_firewall,
    save_mirrors,
    save_policies,
)

log = logging.getLogger("pyloxi.daemon")

# Each sweep reads the whole table: at 17k new connections/s (about 340k entries) one costs
# ~0.3 s of CPU, so sweeping every 2 s took ~15% of a core from the traffic itself.
AGING_PERIOD_S = 5.0
# Persisted rules that failed to apply are retried after 1 s, 2 s, 4 s … at most every minute.
RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0
DEFAULT_TOKEN_FILE = "/etc/loxilb/manual_token"  # loxilb's manual-token file


def _bgp_timers(text: str) -> Timers:
    try:
        hold, keepalive, retry = (int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: three whole numbers, e.g. 3,1,1") from None
    if min(hold, keepalive, retry) < 1 or keepalive >= hold:
        raise argparse.ArgumentTypeError(f"{text!r}: all >= 1 s and keepalive < hold")
    return Timers(hold, keepalive, retry)


def _ka(text: str) -> SessionConfig:
    try:
        return parse_ka(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pyloxi daemon", description="Run the load balancer.")
    p.add_argument("--host", default="127.0.0.1", help="REST API address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11111, help="REST API port (default 11111)")
    # -- API security (loxilb's names; docs/operations.md "API security") --
    p.add_argument("--tls", action="store_true",
                   help="also serve the API over HTTPS on --tls-host:--tls-port")
    p.add_argument("--tls-host", default=None,
                   help="HTTPS API address (default: the same as --host)")
    p.add_argument("--tls-port", type=int, default=8091, help="HTTPS API port (default 8091)")
    p.add_argument("--tls-certificate", default="/opt/loxilb/cert/server.crt",
                   help="certificate (PEM, chain after it) (default /opt/loxilb/cert/server.crt)")
    p.add_argument("--tls-key", default="/opt/loxilb/cert/server.key",
                   help="private key (PEM) (default /opt/loxilb/cert/server.key)")
    p.add_argument("--manualtoken", action="store_true",
                   help="every request needs a token from --token-file (loxilb's manual-token "
                        "mode); /version and the OpenAPI document stay open")
    p.add_argument("--token-file", default=None, metavar="PATH",
                   help="accepted tokens, one per line, re-read on change and on SIGHUP "
                        "(implies --manualtoken; default /etc/loxilb/manual_token)")
    p.add_argument("--userservice", action="store_true",
                   help="users log in (POST /auth/login) for expiring tokens; users kept hashed "
                        "in <state-dir>/users.json (loxilb's flag; docs/operations.md)")
    p.add_argument("--admin-password-file", default=None, metavar="PATH",
                   help="with --userservice and no user yet: create user admin with the "
                        "password in this file")
    p.add_argument("--oauth2", action="store_true",
                   help="loxilb's OAuth2 mode: accepted, but no provider can be configured "
                        "(/oauth/* answer 'not configured')")
    p.add_argument("--oauth2provider", default="google", help=argparse.SUPPRESS)
    p.add_argument("--state-dir", default="/var/lib/pyloxi",
                   help="where desired state is persisted (default /var/lib/pyloxi)")
    p.add_argument("--bpffs", default="/sys/fs/bpf/pyloxi",
                   help="pin directory of the datapath maps (default /sys/fs/bpf/pyloxi)")
    p.add_argument("--interfaces", default="",
                   help="comma-separated interfaces to attach (default: all but lo)")
    p.add_argument("--bpf-object", default=None,
                   help="compiled datapath object (default: $PYLOXI_BPF_OBJECT, else the one "
                        "installed with pyloxi)")
    p.add_argument("--netns", default="", help="run inside this named network namespace")
    p.add_argument("--datapath", choices=DATAPATHS, default="tc",
                   help="tc (default): the TC program alone; xdp: also the XDP fast path of "
                        "established flows on every interface (native where the driver has "
                        "it, else generic); auto: native XDP where the driver has it, tc "
                        "alone elsewhere (veth too); xdp-native: native XDP everywhere, veth "
                        "included, whose peers must run NAPI (GRO on, or an XDP program)")
    p.add_argument("--cleanup-on-exit", action="store_true",
                   help="detach and unpin the datapath on exit (flows stop); default keeps it")
    p.add_argument("--endpoint-down", choices=["drain", "reset"], default="drain",
                   help="flows of an endpoint whose probe fails: drain (finish, the default) "
                        "or reset (cut at once)")
    p.add_argument("--conntrack-entries", type=int, default=None, metavar="N",
                   help="established-flow conntrack table size in entries, two per flow "
                        "(default: the compiled size); fixed for as long as the pins live")
    p.add_argument("--conntrack-half-open", type=int, default=None, metavar="N",
                   help="half-open (LRU) conntrack table size in entries (default: the "
                        "compiled size); fixed for as long as the pins live")
    # loxilb's cluster flags (conntrack sync and BGP use them; HA state needs none of them)
    p.add_argument("--cluster", default="", metavar="PEERS",
                   help="comma-separated addresses of the cluster's other nodes (conntrack sync)")
    p.add_argument("--self", dest="self_index", type=int, default=0, metavar="N",
                   help="this node's index in the cluster (default 0)")
    p.add_argument("-k", "--ka", default=None, type=_ka, metavar="REMOTE:SOURCE:INTERVAL",
                   help="built-in BFD with the peer REMOTE from SOURCE (0.0.0.0: the route's "
                        "source), every INTERVAL us (>= 100000, default 200000); the HA state "
                        "follows it (docs/cluster.md \"Built-in BFD\")")
    p.add_argument("--clusterinterface", default="", metavar="IF",
                   help="interface of the cluster network")
    # -- bgp (pyloxi.bgp) --
    p.add_argument("--bgp", action="store_true",
                   help="announce the VIPs of rules with bgp: true through gobgpd (started and "
                        "supervised by the daemon, API on --bgp-api)")
    p.add_argument("--bgp-api", default="127.0.0.1:50052",
                   help="gobgpd's gRPC address (default 127.0.0.1:50052, loxilb's)")
    p.add_argument("--bgp-attach", action="store_true",
                   help="use the gobgpd already serving --bgp-api instead of starting one")
    p.add_argument("--bgp-timers", default=Timers(), type=_bgp_timers,
                   metavar="HOLD,KEEPALIVE,RETRY",
                   help="neighbour timers in seconds (default 90,30,120)")
    p.add_argument("-p", "--prometheus", action="store_true",
                   help="serve Prometheus metrics at /netlox/v1/metrics from the start "
                        "(loxilb's flag; POST/DELETE /config/metrics turn them on and off)")
    p.add_argument("--log-level", "--loglevel", dest="log_level", default="info",
                   choices=LOG_LEVELS, type=str.lower, metavar="LEVEL",
                   help=f"{', '.join(LOG_LEVELS)} (default info); changed at run time by "
                        "POST /config/params")
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="also log to this file (rotated; served by GET /logs and "
                        "/log-archives). Without it the last lines are kept in memory")
    p.add_argument("--log-max-size", type=int, default=50, metavar="MB",
                   help="rotate the log file beyond this size (default 50; 0: never)")
    p.add_argument("--log-max-backups", type=int, default=4, metavar="N",
                   help="rotated log files kept (default 4, at least 1)")
    p.add_argument("--log-no-compress", action="store_true", help="do not gzip rotated logs")
    return p.parse_args(argv)


class Daemon:
    def __init__(self, args: argparse.Namespace,
                 logs: tuple[LogControl, LogSource] | None = None) -> None:
        self.args = args
        self.log_levels, self.log_source = logs or (LogControl(args.log_level), LogSource())
        bpf_object = locate_object(args.bpf_object)  # missing: stop before touching anything
        # so do a TLS certificate that does not load and a token file with no token in it
        if args.tls:
            check_tls_files(args.tls_certificate, args.tls_key)
        self.tokens = token_file(args)
        # One daemon per state directory and per pin directory, decided before anything is
        # read, attached or written: a second daemon exits here without touching the first's
        # TC programs, maps or rules.
        self.locks = [DirLock(args.state_dir, "state directory")]
        _ensure_bpffs(args.bpffs)
        self.locks.append(DirLock(args.bpffs, "bpffs pin directory"))
        # The rules are read (and checked) before the datapath is touched: a corrupt state
        # file stops the start with the running datapath as it was.
        self.store = SqliteStore(args.state_dir)
        keys, entries = self.store.load()
        self.auth = AuthApi(self.tokens, user_store(args.state_dir, args.admin_password_file)
                            if args.userservice else None,
                            manual_path=self.tokens.path if self.tokens else None,
                            oauth2=args.oauth2, oauth2_providers=args.oauth2provider.split(","))
        interfaces = [i for i in args.interfaces.split(",") if i] or default_interfaces()
        prepare_host(interfaces)
        # the interfaces also tell where to find a live datapath to adopt if pins are gone
        self.datapath = EbpfDatapath(args.bpffs, obj_path=bpf_object,
                                     ct_entries=args.conntrack_entries,
                                     ct_half_entries=args.conntrack_half_open,
                                     interfaces=interfaces,
                                     dsr_tunnel_source=tunnel_source)
        self.datapath.attach(interfaces, args.datapath)
        self.vips = VipPlumber(interfaces)
        # HA state: kept beside the rules, so a restarted BACKUP does not take its VIPs back
        self.cluster = ClusterState(cluster_config(args),
                                    path=Path(args.state_dir) / "cistate.json")
        # built-in BFD: its election sets the HA state, as keepalived's notify script would
        self.bfd = Bfd(self._bfd_decided, path=Path(args.state_dir) / "bfd.json", ka=args.ka)
        self.bgp: BgpSpeaker | None = None
        self._active_active()
        self.engine = Engine(self.datapath, store=self.store, on_change=self._rules_changed,
                             snat_source=source_address, instance_ip=self.instance_ips.ip)
        self._verdicts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verdicts")
        self.probes = ProbeManager(on_change=engine_sink(
            self.engine, executor=self._verdicts,
            on_down=self._reset_flows if args.endpoint_down == "reset" else None))
        self.sync = StateSync(self.vips, rules=self.engine.entries, probes=self.probes,
                              serves=self._serves, changes=self.engine.drain_changes,
                              extra_vips=lambda: self.firewall.local_ips())
        self.bgp = self._bgp_speaker(args) if args.bgp else None
        self.ctsync: CtSync | None = None
        self.agreement = self._agreement(args)
        fw_path = Path(args.state_dir) / "firewall.json"
        self.firewall = Firewall(self.datapath, saved=load_firewall(fw_path),
                                 save=lambda rules: save_firewall(fw_path, rules),
                                 backup=self._backup(), on_change=self.sync.ha_changed)
        self.cluster.subscribe(self._ha_changed)
        self._restore(keys, entries)
        pol_path = Path(args.state_dir) / "policy.json"
        self.policers = Policers(self.datapath, saved=load_policies(pol_path),
                                 save=lambda pols: save_policies(pol_path, pols))
        mirr_path = Path(args.state_dir) / "mirror.json"
        self.mirrors = Mirrors(self.datapath, ports=lambda: interfaces,
                               saved=load_mirrors(mirr_path),
                               save=lambda mirrors: save_mirrors(mirr_path, mirrors))
        # metrics: read when scraped (the datapath's per-CPU counters in batch), never polled
        self.metrics = MetricsExporter(Sources(
            rules=self.engine.rule_table, counters=self.datapath.services_counters,
            datapath_stats=self.datapath.datapath_stats,
            conntrack=self.datapath.conntrack_summary,
            conntrack_capacity=lambda: self.datapath.conntrack_capacity,
            probes=self.probes.statuses, firewall=self.firewall.list, ha=self.cluster.instances,
            disk_path=args.state_dir, policers=self.policers.list,
            mirrors=self.mirrors.counters),
            enabled=args.prometheus, flows=self.datapath.flows)
        self.app = create_app(self.engine, version=__version__, tokens=self.auth.check,
                              open_calls=self.auth.open_calls, viewer_may=self.auth.viewer_may,
                              request_observer=self.metrics.api,
                              extra_routers=[metrics_router(self.metrics, VIEWS),
                                             endpoint_router(self.probes),
                                             bgp_router(self.bgp),
                                             cistate_router(self.cluster),
                                             bfd_router(self.bfd),
                                             session_router(),
                                             firewall_router(self.firewall),
                                             netcfg_router(HostNetConfig(
                                                 lambda: self.datapath.attached)),
                                             params_router(self.log_levels),
                                             logs_router(self.log_source),
                                             *self.auth.routers,
                                             policy_router(self.policers),
                                             mirror_router(self.mirrors),
                                             cluster_router(
                                                 None if self.agreement is None
                                                 else self.agreement.status)])
        self._stop = asyncio.Event()

    def _active_active(self) -> None:
        """Instance IPs (cistate vip: the fullnat SNAT source, announced by BGP: this node's as
        MASTER, the peers' as BACKUP) and, with --cluster, the control channel to the peers
        (carried by conntrack sync) on which they are told."""
        self.instance_ips = InstanceIPs(
            self.cluster, on_peers_changed=lambda: self.bgp.changed() if self.bgp else None)
        self.peers: ClusterPeers | None = None
        if self.cluster.config.peers:
            self.peers = ClusterPeers(min(self.cluster.config.self_index,
                                          len(self.cluster.config.peers)))
            self.peers.register(INSTANCE_SECTION, self.instance_ips.own,
                                self.instance_ips.receive)

        def instance_changed(before: Instance, after: Instance) -> None:
            if before.vip != after.vip:
                self.engine.replan_snat()  # new flows get the new source
            if self.peers is not None:
                self.peers.changed()
            if self.bgp is not None:
                self.bgp.changed()

        self.cluster.subscribe(instance_changed)

    def _bfd_decided(self, instance: str, state: str) -> None:
        """BFD's election: the instance's state changes, its VIP is kept."""
        self.cluster.set_state(instance, state, self.cluster.instance(instance).vip)

    def _rules_changed(self) -> None:
        # the engine and its follower need each other: the engine is built first
        self.sync.changed()
        if self.bgp is not None:
            self.bgp.changed()

    def _bgp_speaker(self, args: argparse.Namespace) -> BgpSpeaker:
        speaker = BgpSpeaker(args.bgp_api, managed=not args.bgp_attach,
                             log_path=f"{args.state_dir}/gobgpd.log",
                             timers=args.bgp_timers, vips=self._bgp_vips,
                             extra_paths=self.instance_ips.paths,
                             config_path=Path(args.state_dir) / "bgp.json")
        speaker.prepare()  # no gobgpd, a 4.x one, no stubs: the start fails here, clearly
        return speaker

    def _bgp_vips(self) -> list[tuple[str, str]]:
        """The addresses to announce, with their HA instance: VIPs (and SCTP secondary IPs)
        of rules with bgp: true."""
        return [(v, instance_of(r.service_arguments.name)) for r in self.engine.desired_rules()
                if r.service_arguments.bgp for v in rule_vips(r)]

    def _ha_changed(self, _before: object, _after: object) -> None:
        """An HA state changed: VIPs follow (statesync), and BGP's attributes (MASTER local-pref
        5000 / MED 10, BACKUP 100 / 20)."""
        self.sync.ha_changed()
        self.firewall.set_backup(self._backup())  # egress (onDefault) SNAT follows the MASTER
        if self.ctsync is not None:
            self.ctsync.set_role(self._sync_role())
        if self.bgp is not None:
            for inst in self.cluster.instances():
                self.bgp.set_ha_state(inst.name, inst.state)

    def _backup(self) -> bool:
        """loxilb: onDefault (egress) SNAT rules are active unless the instance is BACKUP."""
        return self.cluster.instance(DEFAULT_INSTANCE).state == "BACKUP"

    def _sync_role(self) -> str:
        """Conntrack sync sends while this node serves the default instance (MASTER, or no
        cistate call yet: a receiver never overwrites a live local flow, so two senders are
        harmless) and only receives as BACKUP."""
        return "MASTER" if self.cluster.instance(DEFAULT_INSTANCE).serving else "BACKUP"

    def _start_ctsync(self) -> None:
        """--cluster: stream established flows to the other nodes (TCP 22222) and take theirs;
        this node translates to its own share of the NAT ports (active-active)."""
        peers = list(self.cluster.config.peers)
        if not peers:
            return
        index = min(self.cluster.config.self_index, len(peers))
        nodes = [*peers[:index], "0.0.0.0", *peers[index:]]   # this node listens on all
        self.datapath.set_nat_share(index, len(nodes))
        self.ctsync = CtSync(self.datapath.flow_sync(), peers=self.peers)
        self.ctsync.start(nodes, index, role=self._sync_role())
        log.info("conntrack sync with %s (node %d of %d)", ",".join(peers), index, len(nodes))

    def _agreement(self, args: argparse.Namespace) -> ActiveActive | None:
        """--cluster: probe verdicts reach the engine through the cluster's majority (so one
        node's local failure cannot make the nodes' tables differ), and the Maglev tables'
        fingerprints are compared with the peers'; both ride the peer control channel
        (pyloxi.cluster.peers, `self.peers` where the daemon has one)."""
        if not self.cluster.config.peers:
            return None
        index = min(self.cluster.config.self_index, len(self.cluster.config.peers))
        sink = engine_sink(self.engine,
                           on_down=self._reset_flows if args.endpoint_down == "reset" else None)
        views = ProbeViews(
            local=lambda: [(t, self.probes.is_up(t.key) is not False)
                           for t in self.probes.targets()],
            # one worker: verdicts reach the engine in the order they were decided
            sink=lambda target, up, reason: self._verdicts.submit(sink, target, up, reason),
            self_index=index)
        self.probes.on_change = views.local_changed
        agreement = ActiveActive(MaglevFingerprints(self.engine.programs), views, index)
        if self.peers is not None:  # the control channel, built before the engine
            agreement.attach(self.peers)
        return agreement

    def _serves(self, entry: LoadBalancerEntry) -> bool:
        return self.cluster.serves(entry.service_arguments.name)

    def _restore(self, keys: list[str], entries: list[LoadBalancerEntry]) -> None:
        errors = self.engine.restore(entries, keys)
        for err in errors:
            log.error("persisted rule not applied (kept, retried later): %s", err)
        self.datapath.prune_orphans()
        rules = self.engine.desired_rules()
        # drops stale VIPs, and those of instances this node does not serve
        self.vips.sync({v for r in rules if self._serves(r) for v in rule_vips(r)} |
                       self.firewall.local_ips())
        self.sync.changed()
        log.info("restored %d of %d persisted rules", len(entries) - len(errors), len(entries))

    async def _retry_loop(self) -> None:
        """Persisted rules that did not apply at boot (e.g. onearm before its interface has an
        address) are retried, with backoff, until they apply or are deleted."""
        delay = RETRY_MIN_S
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            if not self.engine.parked():
                delay = RETRY_MIN_S
                continue
            try:
                errors = await asyncio.to_thread(self.engine.retry_parked)
            except Exception:
                log.exception("retrying persisted rules failed")
                errors = ["?"]
            delay = min(delay * 2, RETRY_MAX_S) if errors else RETRY_MIN_S
            for err in errors:
                log.warning("persisted rule still not applied (next try in %.0f s): %s",
                            delay, err)

    async def _aging_loop(self) -> None:
        try:  # the sweep's buffers faulted in before its first round, off the sweep's clock
            await asyncio.to_thread(self.datapath.prepare_aging)
        except Exception:  # the sweep allocates them itself then
            log.exception("preparing conntrack aging failed")
        while not self._stop.is_set():
            try:
                started = time.monotonic()
                removed = await asyncio.to_thread(self.engine.age)
                self.metrics.aging.observe(time.monotonic() - started, removed)
                if removed:
                    log.debug("aged out %d flows", removed)
            except Exception:  # keep aging alive; the next round retries
                log.exception("conntrack aging failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), AGING_PERIOD_S)

    def _tls_server(self) -> uvicorn.Server | None:
        """--tls: a second listener on the same app; it stops with the daemon."""
        args = self.args
        return (tls_server(self.app, args.tls_host or args.host, args.tls_port,
                           args.tls_certificate, args.tls_key) if args.tls else None)

    async def run(self) -> None:
        config = uvicorn.Config(self.app, host=self.args.host, port=self.args.port,
                                log_level="warning", lifespan="off",
                                http=JoinedWritesHttpProtocol)
        server = uvicorn.Server(config)
        tls = self._tls_server()
        loop = asyncio.get_running_loop()
        # While serving, uvicorn holds SIGINT/SIGTERM and raises them again once it has shut
        # down: they reach these handlers then, and the rest stops.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        if self.tokens is not None:
            loop.add_signal_handler(signal.SIGHUP, self.tokens.reload)
        await self.probes.start()
        if self.bgp is not None:
            self.bgp.start()
        self._start_ctsync()
        await self.bfd.start()
        self.sync.start(loop)  # its first round hands the restored rules' targets to the probes
        aging = asyncio.create_task(self._aging_loop())
        retry = asyncio.create_task(self._retry_loop())
        serving = asyncio.create_task(server.serve())
        log.info("pyloxi %s serving http://%s:%d/netlox/v1", __version__, self.args.host,
                 self.args.port)
        servings = {serving}
        if tls is not None:
            servings.add(asyncio.create_task(tls.serve()))
            log.info("pyloxi serving https://%s:%d/netlox/v1", tls.config.host, tls.config.port)
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({*servings, stop}, return_when=asyncio.FIRST_COMPLETED)
        self._stop.set()
        server.should_exit = True
        if tls is not None:
            tls.should_exit = True
        await asyncio.gather(*servings, aging, retry, return_exceptions=True)
        await self.bfd.stop()  # the peers hear AdminDown and take over at once
        self.sync.stop()
        if self.ctsync is not None:
            await asyncio.to_thread(self.ctsync.stop)
        if self.bgp is not None:
            await asyncio.to_thread(self.bgp.stop)  # gobgpd closes its sessions: withdrawn
        await self.probes.stop()
        self._verdicts.shutdown(wait=True)

    def _reset_flows(self, target: ProbeTarget) -> None:
        """--endpoint-down=reset: an endpoint's flows are cut as soon as it is marked down."""
        cut = self.datapath.reset_endpoint_flows(target.ip, target.ep_port)
        log.warning("reset %d flows of %s", cut, target.key)

    def shutdown(self) -> None:
        self.sync.flush()
        self.store.close()
        if self.args.cleanup_on_exit:
            self.vips.sync(set())
            self.datapath.destroy()
            log.info("datapath detached and unpinned")
        else:
            self.datapath.close()
            log.info("stopped; the datapath keeps forwarding established flows")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (uvicorn[standard] brings it): the API's
    per-request loop work (transport reads and writes, tasks, callbacks) costs about half
    of asyncio's; None (asyncio's own) otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def token_file(args: argparse.Namespace) -> TokenFile | None:
    """--manualtoken / --token-file: the tokens every request must carry (None: no check)."""
    if args.token_file is None and not args.manualtoken:
        listens = [args.host, *([args.tls_host or args.host] if args.tls else [])]
        if not args.userservice and not loopback_only(listens):
            log.warning("the API is served beyond this host without authentication: "
                        "anyone who reaches it can change the rules (see --token-file)")
        return None
    return TokenFile(args.token_file or DEFAULT_TOKEN_FILE)


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    peers = tuple(p.strip() for p in args.cluster.split(",") if p.strip())
    for peer in peers:
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            raise ValueError(f"--cluster: {peer!r} is not an IP address") from None
    return ClusterConfig(peers=peers, self_index=args.self_index,
                         interface=args.clusterinterface, bgp=args.bgp)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        logs = oplog.setup(args.log_level, log_file=args.log_file, max_mb=args.log_max_size,
                           backups=args.log_max_backups, compress=not args.log_no_compress,
                           stream=sys.stderr)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"cannot start: {exc}\n")
        return 1
    try:
        # namespaces first: everything started afterwards (threads, sockets) inherits them
        if args.netns:
            enter_netns(args.netns)
        share_host_mounts()
        daemon = Daemon(args, logs)
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
    # Full gc pauses must not grow with the rule table (engine.heap explains the trade): what
    # the start built, restored rules included, lives as long as the process.
    gc.collect()
    gc.freeze()
    # Young collections every 10,000 allocations, not 700: a rule create allocates a few
    # hundred objects, ~50 of which live on, and each collection walks what survived the last
    # ones again. A/B at 16,000 rules (two runs each): the daemon's CPU per create 0.77 ->
    # 0.64 ms from one client, 0.57 -> 0.50 ms from 16; garbage waits for at most ~1 MB more.
    # A full collection every second middle one, not every tenth: it walks what was created
    # since the last freeze, so its pause is bounded by the creates between two of them. A
    # 64,000-rule bulk load: 0.6 s pauses every ~28,000 rules -> ~0.1 s every ~5,000, the
    # same total (docs/benchmarks.md, "Fifth round").
    gc.set_threshold(10_000, 10, 1)
    freeze_after_slow_collections()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(daemon.run())
    finally:
        daemon.shutdown()
    return 0
