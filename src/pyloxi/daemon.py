"""`pyloxi daemon`: the composition root, the one module that wires the others together.

    store (desired rules) -> engine -> eBPF datapath (pinned maps, TC on every interface)
    REST API (uvicorn) -> engine;  aging loop -> datapath;  probes -> engine
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import uvicorn

from pyloxi import __version__
from pyloxi.api.app import create_app
from pyloxi.api.endpoint import endpoint_router
from pyloxi.datapath.ebpf.backend import DEFAULT_OBJECT, EbpfDatapath, _ensure_bpffs
from pyloxi.engine import Engine
from pyloxi.host.locks import DirLock
from pyloxi.host.namespaces import enter_netns, share_host_mounts
from pyloxi.host.netlink import VipPlumber, default_interfaces, prepare_host, source_address
from pyloxi.model.lb import LoadBalancerEntry
from pyloxi.probes import ProbeManager, ProbeTarget, engine_sink, targets_for_rule
from pyloxi.store import SqliteStore

log = logging.getLogger("pyloxi.daemon")

# Each sweep reads the whole table: at 17k new connections/s (about 340k entries) one costs
# ~0.3 s of CPU, so sweeping every 2 s took ~15% of a core from the traffic itself.
AGING_PERIOD_S = 5.0
# Persisted rules that failed to apply are retried after 1 s, 2 s, 4 s … at most every minute.
RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pyloxi daemon", description="Run the load balancer.")
    p.add_argument("--host", default="127.0.0.1", help="REST API address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=11111, help="REST API port (default 11111)")
    p.add_argument("--state-dir", default="/var/lib/pyloxi",
                   help="where desired state is persisted (default /var/lib/pyloxi)")
    p.add_argument("--bpffs", default="/sys/fs/bpf/pyloxi",
                   help="pin directory of the datapath maps (default /sys/fs/bpf/pyloxi)")
    p.add_argument("--interfaces", default="",
                   help="comma-separated interfaces to attach (default: all but lo)")
    p.add_argument("--bpf-object", default=DEFAULT_OBJECT, help="compiled datapath object")
    p.add_argument("--netns", default="", help="run inside this named network namespace")
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
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def rule_id(entry: LoadBalancerEntry) -> str:
    sa = entry.service_arguments
    return f"{sa.external_ip}:{sa.protocol}:{sa.port}-{sa.port_max}:{sa.block}"


class StateSync:
    """Followers of the rule table: after each change, VIPs and probe targets are brought in
    step on one background thread that always takes the latest rule list, within
    FOLLOW_INTERVAL_S, seeing only what changed (the engine replaces an entry object when its
    rule changes, so a diff by identity is exact). Durability is not its business: the engine
    waits for the store (SqliteStore) before a change is answered."""

    FOLLOW_INTERVAL_S = 0.1  # VIP and probe updates

    def __init__(self, vips: VipPlumber) -> None:
        self.vips = vips
        self.source: Callable[[], list[LoadBalancerEntry]] | None = None  # the engine's rules
        self.probes: ProbeManager | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._seen: dict[int, LoadBalancerEntry] = {}  # id(entry) -> entry, as last applied
        self._vip_refs: Counter[str] = Counter()
        self._probed: set[str] = set()  # rules that own probe targets
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="state-sync", daemon=True)
        self._thread.start()

    def changed(self) -> None:
        """The engine's on_change: called under its lock, so it only raises a flag."""
        with self._cond:
            self._pending = True
            self._cond.notify()

    def flush(self) -> None:
        with self._cond:
            pending, self._pending = self._pending, False
        if pending and self.source is not None:
            self._follow(self.source())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending or self.source is None:
                    self._cond.wait()
                self._pending = False
            try:
                self._follow(self.source())
            except Exception:  # a VIP or probe hiccup must not stop the follower
                log.exception("applying rule changes to VIPs/probes failed")
            time.sleep(self.FOLLOW_INTERVAL_S)  # let a burst gather: diffs are O(rules)

    def _follow(self, rules: list[LoadBalancerEntry]) -> None:
        """VIPs and probe targets follow the rules."""
        current = {id(r): r for r in rules}
        added = [r for i, r in current.items() if i not in self._seen]
        gone = [r for i, r in self._seen.items() if i not in current]
        self._seen = current
        appeared = {v for v in (r.service_arguments.external_ip for r in added)
                    if not self._vip_refs[v]}
        self._vip_refs.update(r.service_arguments.external_ip for r in added)
        self._vip_refs.subtract(r.service_arguments.external_ip for r in gone)
        vanished = {v for v in (r.service_arguments.external_ip for r in gone)
                    if self._vip_refs[v] <= 0}
        for v in vanished:
            del self._vip_refs[v]
        if appeared or vanished:
            self.vips.change(appeared - vanished, vanished)
        if self.loop is not None and self.probes is not None and (added or gone):
            self.loop.call_soon_threadsafe(self.sync_probes, added, gone)

    def sync_probes(self, added: list[LoadBalancerEntry], gone: list[LoadBalancerEntry]) -> None:
        """In the event loop: changed rules get their probe targets (loxilb's keys)."""
        assert self.probes is not None
        kept = {rule_id(r) for r in added}
        for rid in {rule_id(r) for r in gone} - kept:
            if rid in self._probed:
                self.probes.drop_rule(rid)
                self._probed.discard(rid)
        for entry in added:
            rid = rule_id(entry)
            targets = targets_for_rule(entry)
            if targets or rid in self._probed:
                self.probes.sync_rule(rid, targets)
            if targets:
                self._probed.add(rid)
            else:
                self._probed.discard(rid)


class Daemon:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
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
        interfaces = [i for i in args.interfaces.split(",") if i] or default_interfaces()
        prepare_host(interfaces)
        # the interfaces also tell where to find a live datapath to adopt if pins are gone
        self.datapath = EbpfDatapath(args.bpffs, obj_path=args.bpf_object,
                                     ct_entries=args.conntrack_entries,
                                     ct_half_entries=args.conntrack_half_open,
                                     interfaces=interfaces)
        self.datapath.attach(interfaces)
        self.vips = VipPlumber()
        self.sync = StateSync(self.vips)
        self.engine = Engine(self.datapath, store=self.store, on_change=self.sync.changed,
                             snat_source=source_address)
        self.sync.source = self.engine.entries
        self._restore(keys, entries)
        self._verdicts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verdicts")
        self.probes = ProbeManager(on_change=engine_sink(
            self.engine, executor=self._verdicts,
            on_down=self._reset_flows if args.endpoint_down == "reset" else None))
        self.sync.probes = self.probes
        self.app = create_app(self.engine, version=__version__,
                              extra_routers=[endpoint_router(self.probes)])
        self._stop = asyncio.Event()

    def _restore(self, keys: list[str], entries: list[LoadBalancerEntry]) -> None:
        errors = self.engine.restore(entries, keys)
        for err in errors:
            log.error("persisted rule not applied (kept, retried later): %s", err)
        self.datapath.prune_orphans()
        rules = self.engine.desired_rules()
        self.vips.sync({r.service_arguments.external_ip for r in rules})  # drops stale VIPs
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
        while not self._stop.is_set():
            try:
                removed = await asyncio.to_thread(self.engine.age)
                if removed:
                    log.debug("aged out %d flows", removed)
            except Exception:  # keep aging alive; the next round retries
                log.exception("conntrack aging failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), AGING_PERIOD_S)

    async def run(self) -> None:
        config = uvicorn.Config(self.app, host=self.args.host, port=self.args.port,
                                log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        self.sync.loop = loop
        await self.probes.start()
        self.sync.sync_probes(self.engine.desired_rules(), [])
        aging = asyncio.create_task(self._aging_loop())
        retry = asyncio.create_task(self._retry_loop())
        serving = asyncio.create_task(server.serve())
        log.info("pyloxi %s serving http://%s:%d/netlox/v1", __version__, self.args.host,
                 self.args.port)
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
        self._stop.set()
        server.should_exit = True
        await asyncio.gather(serving, aging, retry, return_exceptions=True)
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


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # namespaces first: everything started afterwards (threads, sockets) inherits them
        if args.netns:
            enter_netns(args.netns)
        share_host_mounts()
        daemon = Daemon(args)
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        asyncio.run(daemon.run())
    finally:
        daemon.shutdown()
    return 0
