"""The BGP speaker: desired state -> gobgpd, with gobgpd supervised.

Desired state is kept here and re-applied whole whenever gobgpd (re)starts, so a crashed gobgpd
comes back with its global config, neighbours and paths. API changes (global, neighbours) are
applied to gobgpd synchronously, so a bad request is answered with gobgpd's reason and changes
nothing; paths (rules' VIPs, HA attributes) are reconciled by the supervisor thread, woken by
`changed()` and `set_ha_state()`.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyloxi.bgp import persist
from pyloxi.bgp.config import BgpGlobal, BgpNeighbor, check_global, check_neighbor
from pyloxi.bgp.gobgp import GobgpClient, PeerInfo
from pyloxi.bgp.policy import DIRECTIONS, PolicyBook
from pyloxi.model.bgp import (
    BGPApplyPolicyToNeighborMod,
    BGPGlobalConfig,
    BGPNeigh,
    BGPNeighGetEntry,
    BGPPolicyDefinedSetGetEntry,
    BGPPolicyDefinedSetsMod,
    BGPPolicyDefinitionsMod,
)
from pyloxi.model.errors import InvalidInput, NotFound, PyloxiError

log = logging.getLogger("pyloxi.bgp")

# loxilb's attributes by HA state (gobgpclient.go): MASTER 5000/10, BACKUP 100/20, else 0/0
HA_ATTRIBUTES = {"MASTER": (5000, 10), "BACKUP": (100, 20)}
READY_TIMEOUT_S = 30.0  # a busy machine starts gobgpd slowly; a restart loop would be worse
SUPERVISE_PERIOD_S = 0.5
RESTART_BACKOFF_MAX_S = 10.0


class BgpUnavailable(PyloxiError):
    """gobgpd is not answering (dead, restarting) or BGP is not enabled: 503."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


def path_attributes(state: str | None) -> tuple[int, int]:
    """(local-pref, MED) for an HA state (None: no HA state)."""
    return HA_ATTRIBUTES.get((state or "").upper(), (0, 0))


@dataclass(frozen=True)
class Timers:
    hold: int = 90
    keepalive: int = 30
    connect_retry: int = 120


def _duration(since_epoch_s: int) -> str:
    """gobgp reports the last up/down as a Unix time: loxilb shows the time since then."""
    secs = max(0, int(time.time()) - since_epoch_s)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def gobgpd_version(binary: str) -> str:
    """`gobgpd --version` -> "3.10.0"; refuses majors other than 3 (our stubs are 3.10's)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         timeout=10).stdout
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise RuntimeError(f"{binary} --version: no version in {out.strip()[:100]!r}")
    if m.group(1) != "3":
        raise RuntimeError(f"{binary} is gobgp {m.group(0)}: pyloxi speaks gobgp 3.x's API")
    return m.group(0)


def _die_with_parent() -> None:
    # gobgpd must not outlive a daemon killed with SIGKILL (PR_SET_PDEATHSIG = 1)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _grpc_error(exc: Exception) -> tuple[bool, str]:
    """(gobgpd unreachable?, message) of a gRPC failure."""
    import grpc

    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        details = exc.details() or str(code)
        down = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED)
        return down, str(details)
    return False, str(exc)


class BgpSpeaker:
    """gobgpd driven from the desired state.

    managed=True: this speaker spawns `gobgpd --api-hosts=<api>` and restarts it when it dies;
    managed=False: it attaches to a gobgpd already serving `api` and re-applies its state when
    that one comes back empty.
    """

    def __init__(self, api: str = "127.0.0.1:50052", *, managed: bool = True,
                 binary: str = "gobgpd", log_path: str | None = None,
                 timers: Timers = Timers(),
                 vips: Callable[[], Iterable[tuple[str, str]]] = lambda: (),
                 extra_paths: Callable[[], dict[str, tuple[int, int]]] = dict,
                 config_path: Path | None = None) -> None:
        host, _, port = api.rpartition(":")
        if managed and host not in ("127.0.0.1", "localhost", "[::1]"):
            raise ValueError(f"--bgp-api {api}: a gobgpd we start listens on loopback only")
        self.api = api
        self.managed = managed
        self.binary = binary
        self.log_path = log_path
        self.timers = timers
        self._vips_source = vips
        # address -> (local-pref, MED) announced beside the VIPs (the cluster's instance IPs)
        self._extra_source = extra_paths
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: GobgpClient | None = None
        self._up = False  # gobgpd answered and holds our state
        self.version = ""
        self.restarts = 0
        # desired
        self._global: BgpGlobal | None = None
        self._neighbors: dict[str, BgpNeighbor] = {}
        self._ha: dict[str, str] = {}
        self._policy = PolicyBook()
        # applied to the running gobgpd
        self._applied_global: BgpGlobal | None = None
        self._applied_neighbors: set[str] = set()
        self._applied_paths: dict[str, tuple[int, int]] = {}
        # what the API accepted, kept on disk: a restarted daemon gives it back to gobgpd
        self._config_path = config_path
        if config_path is not None:
            self._global, neighbors = persist.load(config_path)
            self._neighbors = {n.address: n for n in neighbors}
            self._policy = persist.load_policy(config_path)
            if self._global is not None:
                log.info("bgp: restored global config (AS %d) and %d neighbours from %s",
                         self._global.asn, len(neighbors), config_path)

    # -- public API ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """What can fail before anything runs: gobgpd missing or of another major version,
        the gRPC stubs not built. Raises RuntimeError with the reason."""
        if self._client is not None:
            return
        if self.managed:
            if shutil.which(self.binary) is None:
                raise RuntimeError(f"{self.binary} not found: apt-get install gobgpd")
            self.version = gobgpd_version(self.binary)
        self._client = GobgpClient(self.api)

    def start(self) -> None:
        self.prepare()
        # gobgpd is spawned by the supervisor thread only: its parent-death signal follows
        # the thread that forked it, and that thread lives as long as the speaker.
        self._thread = threading.Thread(target=self._supervise, name="bgp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._up = False
            if self._client is not None:
                self._client.close()

    def changed(self) -> None:
        """The rules (or the extra paths) changed: the supervisor re-reads what to announce."""
        self._wake.set()

    def set_ha_state(self, instance: str, state: str) -> None:
        """HA state of a cluster instance: its rules' VIPs are announced with local-pref 5000 /
        MED 10 while it is MASTER, 100 / 20 as BACKUP, 0 / 0 otherwise (loxilb's)."""
        with self._lock:
            self._ha[instance] = state.upper()
        self._wake.set()

    def set_global(self, g: BgpGlobal) -> None:
        g = check_global(g)
        with self._lock:
            client = self._need_up()
            try:
                if self._applied_global is not None and self._applied_global != g:
                    client.stop()  # gobgpd takes a new global config only after StopBgp
                    self._applied_global = None
                    self._applied_neighbors.clear()
                    self._applied_paths.clear()
                if self._applied_global is None:
                    client.start(g.asn, g.router_id, g.listen_port)
                    self._push_policy(client, self._policy)  # StartBgp empties gobgpd's
            except Exception as exc:
                self._fail("global config", exc)
            self._global = self._applied_global = g
            self._save()
        self._wake.set()

    def add_neighbor(self, n: BgpNeighbor) -> None:
        n = check_neighbor(n)
        with self._lock:
            if self._global is None:
                raise InvalidInput("bgp: no global config (POST /config/bgp/global first)")
            client = self._need_up()
            try:
                if n.address in self._applied_neighbors:
                    client.delete_peer(n.address)  # loxilb's update: replace
                    self._applied_neighbors.discard(n.address)
                self._add_peer(client, n)
            except Exception as exc:
                self._fail(f"neighbor {n.address}", exc)
            self._neighbors[n.address] = n
            self._save()

    def delete_neighbor(self, address: str, asn: int | None = None) -> None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise InvalidInput(f"invalid ipAddress {address[:64]!r}: not an IP address") from None
        with self._lock:
            n = self._neighbors.get(address)
            if n is None or (asn and n.asn != asn):
                raise NotFound(f"bgp neighbor {address} not found")
            client = self._need_up()
            try:
                client.delete_peer(address)
            except Exception as exc:
                self._fail(f"neighbor {address}", exc)
            self._applied_neighbors.discard(address)
            del self._neighbors[address]
            self._save()

    def neighbors(self) -> list[tuple[BgpNeighbor, PeerInfo | None]]:
        with self._lock:
            client = self._need_up()
            try:
                live = {p.address: p for p in client.list_peers()}
            except Exception as exc:
                self._fail("neighbors", exc)
            return [(n, live.get(a)) for a, n in sorted(self._neighbors.items())]

    def announced(self) -> dict[str, tuple[int, int]]:
        """VIP -> (local-pref, MED) as last applied to gobgpd."""
        with self._lock:
            return dict(self._applied_paths)

    # -- the REST API's view (pyloxi.api.bgp.BgpControl) -----------------------------------
    def api_set_global(self, cfg: BGPGlobalConfig) -> None:
        # listenPort not given (0): no listener; gobgpd connects out to its neighbours
        self.set_global(BgpGlobal(cfg.local_as, cfg.router_id, cfg.listen_port or -1))

    def api_add_neighbor(self, neigh: BGPNeigh) -> None:
        self.add_neighbor(BgpNeighbor(neigh.ip_address, neigh.remote_as,
                                      neigh.remote_port or 179, neigh.set_multi_hop))

    def api_delete_neighbor(self, ip: str, remote_as: int) -> None:
        self.delete_neighbor(ip, remote_as or None)

    def api_neighbors(self) -> list[BGPNeighGetEntry]:
        out = []
        for n, live in self.neighbors():
            out.append(BGPNeighGetEntry(
                ip_address=n.address, remote_as=n.asn,
                state=live.state if live else "unknown",
                updowntime=_duration(live.uptime_s) if live and live.uptime_s else ""))
        return out

    # -- policies (loxilb's /config/bgp/policy/*) --------------------------------------------
    def _change_policy(self, change: Callable[[PolicyBook], None]) -> None:
        """`change` made on a copy (it raises, nothing changed, on bad input); the copy's image
        given to gobgpd; kept and saved once gobgpd took it."""
        with self._lock:
            if self._global is None:
                raise InvalidInput("bgp: no global config (POST /config/bgp/global first)")
            new = self._policy.clone()
            change(new)
            client = self._need_up()
            if self._applied_global is None:  # being re-applied: the policies come with it
                raise BgpUnavailable(f"bgp: gobgpd at {self.api} is restarting")
            try:
                self._push_policy(client, new)
            except Exception as exc:
                try:  # gobgpd may have taken the sets and policies but not the assignments
                    self._push_policy(client, self._policy)
                except Exception as again:
                    log.error("bgp: restoring the policies in gobgpd failed: %s",
                              _grpc_error(again)[1])
                self._fail("policy", exc)
            self._policy = new
            self._save()

    def api_add_defined_set(self, kind: str, s: BGPPolicyDefinedSetsMod) -> None:
        self._change_policy(lambda book: book.add_set(kind, s))

    def api_delete_defined_set(self, kind: str, name: str) -> None:
        self._change_policy(lambda book: book.delete_set(kind, name))

    def api_defined_sets(self, kind: str, name: str) -> list[BGPPolicyDefinedSetGetEntry]:
        with self._lock:
            return self._policy.get_sets(kind, name)

    def api_add_policy(self, d: BGPPolicyDefinitionsMod) -> None:
        self._change_policy(lambda book: book.add_policy(d))

    def api_delete_policy(self, name: str) -> None:
        self._change_policy(lambda book: book.delete_policy(name))

    def api_policies(self) -> list[BGPPolicyDefinitionsMod]:
        with self._lock:
            return list(self._policy.policies.values())

    def api_apply_policy(self, req: BGPApplyPolicyToNeighborMod) -> None:
        self._change_policy(lambda book: book.apply(req, set(self._neighbors)))

    def api_unapply_policy(self, req: BGPApplyPolicyToNeighborMod) -> None:
        self._change_policy(lambda book: book.unapply(req))

    @property
    def up(self) -> bool:
        return self._up

    # -- internals ----------------------------------------------------------------------------
    def _save(self) -> None:
        """After gobgpd took the change, before the API answers: an acknowledged change
        survives a crash. A failed write is a 500 (gobgpd has it, the disk does not)."""
        if self._config_path is not None:
            persist.save(self._config_path, self._global, list(self._neighbors.values()),
                         self._policy)

    def _need_up(self) -> GobgpClient:
        if not self._up or self._client is None:
            raise BgpUnavailable(f"bgp: gobgpd at {self.api} is not answering (restarting)")
        return self._client

    def _fail(self, what: str, exc: Exception) -> None:
        down, msg = _grpc_error(exc)
        if down:
            log.error("gobgpd at %s not answering (%s): %s", self.api, what, msg)
            self._up = False
            self._wake.set()
            raise BgpUnavailable(f"bgp: gobgpd not answering: {msg}") from None
        raise InvalidInput(f"bgp {what}: {msg}") from None

    def _push_policy(self, client: GobgpClient, book: PolicyBook) -> None:
        """gobgpd's sets, policies and global assignments made those of `book`, then every
        session re-evaluated: gobgpd applies a changed policy to what it already sent only on
        a soft reset, and gobgpd 3.10's soft reset sends what is newly accepted but does not
        withdraw what is newly rejected. Those paths of ours are withdrawn and announced again
        (the withdrawal passes every export policy; the announcement only the accepting
        ones): a neighbour that still accepts one sees it flap once."""
        before = client.adj_out()
        image = book.image()
        client.set_policies(image)
        for direction in DIRECTIONS:
            client.set_assignment(direction, image.chains[direction], image.default[direction])
        client.soft_reset()
        after = client.adj_out()
        stale = {pfx for peer, sent in before.items() for pfx in sent - after.get(peer, set())}
        for vip, attrs in self._applied_paths.items():
            if f"{vip}/{ipaddress.ip_address(vip).max_prefixlen}" in stale:
                log.info("bgp: re-announce %s (an export policy now rejects it)", vip)
                client.delete_path(vip)
                client.add_path(vip, *attrs)

    def _add_peer(self, client: GobgpClient, n: BgpNeighbor) -> None:
        t = self.timers
        client.add_peer(n.address, n.asn, remote_port=n.remote_port, multihop=n.multihop,
                        hold=t.hold, keepalive=t.keepalive, connect_retry=t.connect_retry)
        self._applied_neighbors.add(n.address)

    def _spawn(self) -> None:
        args = [self.binary, f"--api-hosts={self.api}", "--pprof-disable", "-p"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT,
                                          preexec_fn=_die_with_parent)  # noqa: PLW1509
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        log.info("started gobgpd %s (pid %d) on %s", self.version, self._proc.pid, self.api)

    def _answers(self, client: GobgpClient) -> tuple[int, str] | None:
        try:
            return client.get_global()
        except Exception:
            return None

    def _ensure_running(self) -> bool:
        """gobgpd up and holding our global config and neighbours; False: not (yet)."""
        assert self._client is not None
        client = self._client
        if self.managed and (self._proc is None or self._proc.poll() is not None):
            if self._proc is not None:
                log.error("gobgpd (pid %d) exited with %s: restarting it", self._proc.pid,
                          self._proc.returncode)
                self.restarts += 1
            self._up = False
            self._spawn()
            deadline = time.monotonic() + READY_TIMEOUT_S
            while self._answers(client) is None:
                if time.monotonic() > deadline or self._proc is None or \
                        self._proc.poll() is not None:
                    log.error("gobgpd did not answer on %s", self.api)
                    return False
                time.sleep(0.05)
        answer = self._answers(client)
        if answer is None:
            if self._up:
                log.error("gobgpd at %s stopped answering", self.api)
            self._up = False
            return False
        if not self._up or (self._applied_global is not None and answer[0] == 0):
            # a fresh (or restarted) gobgpd holds nothing of ours: re-apply all of it
            self._applied_global = None
            self._applied_neighbors.clear()
            self._applied_paths.clear()
        self._up = True
        try:
            if self._global is not None and self._applied_global is None:
                if answer[0] != 0:
                    client.stop()
                g = self._global
                client.start(g.asn, g.router_id, g.listen_port)
                self._push_policy(client, self._policy)
                self._applied_global = g
            if self._applied_global is not None:
                for addr, n in self._neighbors.items():
                    if addr not in self._applied_neighbors:
                        self._add_peer(client, n)
        except Exception as exc:
            down, msg = _grpc_error(exc)
            log.error("re-applying bgp state to gobgpd failed: %s", msg)
            self._up = not down
            return False
        return True

    def _desired_paths(self) -> dict[str, tuple[int, int]]:
        """VIP -> the attributes of its rule's HA instance; a VIP shared by rules of several
        instances gets the best of them (a MASTER of any of them attracts its traffic). The
        extra paths (the cluster's instance IPs) come with their own attributes; an address
        that is also a VIP is announced as a VIP."""
        extra = {str(ipaddress.ip_address(a)): at for a, at in self._extra_source().items()}
        want: dict[str, tuple[int, int]] = {}
        for vip, instance in self._vips_source():
            key = str(ipaddress.ip_address(vip))
            attrs = path_attributes(self._ha.get(instance))
            want[key] = max(want.get(key, attrs), attrs)
        return {**extra, **want}

    def _reconcile_paths(self) -> None:
        assert self._client is not None
        if self._applied_global is None:
            return
        want = self._desired_paths()
        client = self._client
        # logged before the call: the line's time stamp is when the change left for gobgpd
        for vip in [v for v in self._applied_paths if v not in want]:
            log.info("bgp: withdraw %s", vip)
            client.delete_path(vip)
            del self._applied_paths[vip]
        for vip, attrs in want.items():
            if self._applied_paths.get(vip) != attrs:
                log.info("bgp: announce %s local-pref %d med %d", vip, *attrs)
                client.add_path(vip, *attrs)
                self._applied_paths[vip] = attrs

    def round(self) -> None:
        """One supervision round (the thread's body; tests may call it)."""
        with self._lock:
            if not self._ensure_running():
                return
            try:
                self._reconcile_paths()
            except Exception as exc:
                down, msg = _grpc_error(exc)
                log.error("bgp: reconciling paths failed: %s", msg)
                if down:
                    self._up = False

    def _supervise(self) -> None:
        backoff = SUPERVISE_PERIOD_S
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.round()
            except Exception:
                log.exception("bgp supervision round failed")
            backoff = SUPERVISE_PERIOD_S if self._up else min(backoff * 2,
                                                                RESTART_BACKOFF_MAX_S)
            self._wake.wait(backoff)

    def status(self) -> dict[str, Any]:
        return {"api": self.api, "managed": self.managed, "up": self._up,
                "version": self.version, "restarts": self.restarts,
                "pid": self._proc.pid if self._proc is not None else None,
                "announced": self.announced()}


