"""A fake Kubernetes API server and a fake pyloxi API (real HTTP, Starlette under uvicorn).

kmock (the maintained fake, by kopf's author) was checked first: its list answers a literal
`resourceVersion: "..."` and its watch ignores `resourceVersion` (replays every object as
ADDED), so it cannot answer "events since N" or 410 Gone, which are what the agent's informer is
tested on (docs/k8s-agent-design.md). This fake keeps only what the agent relies on:
* one global resourceVersion; every write bumps it; PUT with a stale metadata.resourceVersion
  answers 409 Conflict;
* list answers `metadata.resourceVersion`; label selectors `k`, `!k`, `k=v`, `k!=v`;
* watch (`?watch=1&resourceVersion=N`) streams JSON lines from the event history after N; a
  resourceVersion older than the compacted history gets an ERROR event with code 410 (what the
  apiserver sends); `timeoutSeconds` ends the stream;
* the `/status` subresource: PUT there changes only `status`; PUT on the object keeps `status`;
* Services get uid, creationTimestamp and NodePorts on write; Events are stored like any object.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# plural → (group/version prefix, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "services": ("/api/v1", "Service", True),
    "nodes": ("/api/v1", "Node", False),
    "events": ("/api/v1", "Event", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "EndpointSlice", True),
}
KIND_TO_PLURAL = {v[1]: k for k, v in RESOURCES.items()}
API_VERSION = {"services": "v1", "nodes": "v1", "events": "v1",
               "endpointslices": "discovery.k8s.io/v1"}
METHODS = ["GET", "POST", "PUT", "DELETE"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """An ASGI app under uvicorn on 127.0.0.1 (a free port), in the running event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        sock = socket.socket()
        # accepted sockets inherit it; without it every answer waits ~40 ms for a delayed ACK
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


def _status(code: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": message, "reason": reason, "code": code}, status_code=code)


def _gone(since: int, oldest: int) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
            "message": f"too old resource version: {since} ({oldest})", "code": 410}


def parse_selector(sel: str) -> list[tuple[str, str, str]]:
    """`k`, `!k`, `k=v`, `k==v`, `k!=v`, comma-separated (set-based ones are not used)."""
    reqs = []
    for p in (x.strip() for x in sel.split(",") if x.strip()):
        if "!=" in p:
            k, v = p.split("!=", 1)
            reqs.append((k.strip(), "!=", v.strip()))
        elif "=" in p:
            k, v = p.replace("==", "=").split("=", 1)
            reqs.append((k.strip(), "=", v.strip()))
        elif p.startswith("!"):
            reqs.append((p[1:].strip(), "!", ""))
        else:
            reqs.append((p, "exists", ""))
    return reqs


def matches(obj: dict[str, Any], reqs: list[tuple[str, str, str]]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for key, op, val in reqs:
        ok = {"exists": key in labels, "!": key not in labels, "=": labels.get(key) == val,
              "!=": labels.get(key) != val}[op]
        if not ok:
            return False
    return True


class _Watch:
    def __init__(self, plural: str, ns: str | None, reqs: list[tuple[str, str, str]]) -> None:
        self.plural, self.ns, self.reqs = plural, ns, reqs
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def wants(self, plural: str, obj: dict[str, Any]) -> bool:
        if plural != self.plural:
            return False
        if self.ns and obj["metadata"].get("namespace") != self.ns:
            return False
        return matches(obj, self.reqs)


class FakeKube(Served):
    """In-memory apiserver. Test code may use the python methods (create/update/...) directly;
    they notify watches exactly like HTTP writes do."""

    def __init__(self) -> None:
        super().__init__(Starlette(routes=[Route("/{path:path}", self.handle, methods=METHODS)]))
        self.rv = 100
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            p: {} for p in RESOURCES}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, plural, type, obj)
        self.compacted_rv = 0  # watches from below this get 410
        self.watches: list[_Watch] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_status_puts = 0  # answer this many /status PUTs with 409 (tests)
        self._node_port = 30000

    # ---- store -------------------------------------------------------------------------
    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, plural: str, typ: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, plural, typ, copy.deepcopy(obj)))
        for w in self.watches:
            if w.wants(plural, obj):
                w.queue.put_nowait((typ, copy.deepcopy(obj)))

    def compact(self) -> None:
        """Forget the event history: every watch from an older resourceVersion gets 410, and
        open streams end with an ERROR 410 event (what the apiserver's watch cache does)."""
        self.history.clear()
        self.compacted_rv = self.rv + 1
        for w in self.watches:
            w.queue.put_nowait(("ERROR", _gone(self.rv, self.compacted_rv)))
            w.queue.put_nowait(("__CLOSE__", {}))

    def _defaults(self, plural: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj.setdefault("metadata", {})
        obj.setdefault("apiVersion", API_VERSION[plural])
        obj.setdefault("kind", RESOURCES[plural][1])
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp",
                            dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        if plural == "services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
                if spec["type"] in ("NodePort", "LoadBalancer"):
                    if not p.get("nodePort"):
                        self._node_port += 1
                        p["nodePort"] = self._node_port
                else:
                    p.pop("nodePort", None)
            if spec["type"] != "LoadBalancer" and old is not None:
                obj.setdefault("status", {})["loadBalancer"] = {}
            obj.setdefault("status", {}).setdefault("loadBalancer", {})

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = KIND_TO_PLURAL[obj["kind"]]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if RESOURCES[plural][2]:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        key = (meta.get("namespace", ""), meta["name"])
        if key in self.objects[plural]:
            raise KeyError("exists")
        self._defaults(plural, obj, None)
        meta["resourceVersion"] = self._bump()
        self.objects[plural][key] = obj
        self._record(plural, "ADDED", obj)
        return copy.deepcopy(obj)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        plural = KIND_TO_PLURAL[kind]
        ns = namespace if RESOURCES[plural][2] else ""
        obj = self.objects[plural].get((ns, name))
        return copy.deepcopy(obj) if obj else None

    def update(self, obj: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        """PUT semantics; raises ValueError('conflict') on a stale resourceVersion."""
        plural = KIND_TO_PLURAL[obj["kind"]]
        meta = obj["metadata"]
        ns = meta.get("namespace", "default") if RESOURCES[plural][2] else ""
        key = (ns, meta["name"])
        old = self.objects[plural].get(key)
        if old is None:
            raise LookupError("not found")
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ValueError("conflict")
        new = copy.deepcopy(old if subresource == "status" else obj)
        if subresource == "status":
            new["status"] = copy.deepcopy(obj.get("status") or {})
        elif "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        if RESOURCES[plural][2]:
            new["metadata"]["namespace"] = ns
        self._defaults(plural, new, old)
        new["metadata"]["resourceVersion"] = self._bump()
        self.objects[plural][key] = new
        self._record(plural, "MODIFIED", new)
        return copy.deepcopy(new)

    def patch(self, kind: str, name: str, namespace: str = "default",
              **changes: Any) -> dict[str, Any]:
        """Read-modify-write helper for tests: changes are deep-merged dicts (None removes)."""
        obj = self.get(kind, name, namespace)
        assert obj is not None, f"{kind} {namespace}/{name} missing"

        def merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
            for k, v in src.items():
                if isinstance(v, dict) and isinstance(dst.get(k), dict):
                    merge(dst[k], v)
                elif v is None:
                    dst.pop(k, None)
                else:
                    dst[k] = copy.deepcopy(v)

        merge(obj, changes)
        return self.update(obj)

    def delete(self, kind: str, name: str, namespace: str = "default") -> None:
        plural = KIND_TO_PLURAL[kind]
        ns = namespace if RESOURCES[plural][2] else ""
        obj = self.objects[plural].pop((ns, name))
        obj["metadata"]["resourceVersion"] = self._bump()
        self._record(plural, "DELETED", obj)

    def events_for(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        return [copy.deepcopy(e) for (ns, _), e in sorted(self.objects["events"].items())
                if ns == namespace and e.get("involvedObject", {}).get("name") == name]

    # ---- HTTP --------------------------------------------------------------------------
    def _route(self, path: str) -> tuple[str, str | None, str | None, str] | None:
        m = re.match(r"^(/api/v1|/apis/[^/]+/[^/]+)(?:/namespaces/([^/]+))?/([a-z]+)"
                     r"(?:/([^/]+))?(?:/(status))?$", path)
        if not m:
            return None
        prefix, ns, plural, name, sub = m.groups()
        if plural not in RESOURCES or RESOURCES[plural][0] != prefix:
            return None
        if not RESOURCES[plural][2] and ns:
            return None
        return plural, ns, name, sub or ""

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        query = request.url.query
        self.requests.append((request.method, path + (f"?{query}" if query else "")))
        route = self._route(path)
        if route is None:
            return _status(404, "NotFound", f"the server could not find {path}")
        plural, ns, name, sub = route
        kind = RESOURCES[plural][1]
        namespaced = RESOURCES[plural][2]
        q = request.query_params
        if request.method == "GET" and name is None:
            reqs = parse_selector(q.get("labelSelector", ""))
            if q.get("watch") in ("1", "true"):
                return self._watch(request, plural, ns, reqs)
            items = [copy.deepcopy(o) for (ons, _), o in sorted(self.objects[plural].items())
                     if (ns is None or ons == ns) and matches(o, reqs)]
            return JSONResponse({"kind": f"{kind}List", "apiVersion": API_VERSION[plural],
                                 "metadata": {"resourceVersion": str(self.rv)},
                                 "items": items})
        key = (ns or "", name or "") if namespaced else ("", name or "")
        if request.method == "GET":
            obj = self.objects[plural].get(key)
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            return JSONResponse(obj)
        if request.method == "POST" and name is None:
            body = await request.json()
            body.setdefault("kind", kind)
            if namespaced:
                body.setdefault("metadata", {})["namespace"] = ns or "default"
            try:
                return JSONResponse(self.create(body), status_code=201)
            except KeyError:
                return _status(409, "AlreadyExists",
                               f'{plural} "{body["metadata"].get("name")}" already exists')
        if request.method == "PUT" and name:
            body = await request.json()
            body.setdefault("kind", kind)
            if body.get("metadata", {}).get("name") != name:
                return _status(400, "BadRequest", "name in body does not match the URL")
            if namespaced:
                body["metadata"]["namespace"] = ns
            if sub == "status" and self.fail_status_puts > 0:
                self.fail_status_puts -= 1
                return _status(409, "Conflict", "injected conflict")
            try:
                return JSONResponse(self.update(body, subresource=sub))
            except LookupError:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            except ValueError:
                return _status(409, "Conflict",
                               f'Operation cannot be fulfilled on {plural} "{name}": the object '
                               "has been modified; please apply your changes to the latest "
                               "version and try again")
        return _status(405, "MethodNotAllowed", f"{request.method} not allowed")

    def _watch(self, request: Request, plural: str, ns: str | None,
               reqs: list[tuple[str, str, str]]) -> Response:
        rv_s = request.query_params.get("resourceVersion", "")
        timeout = float(request.query_params.get("timeoutSeconds", "1800"))
        w = _Watch(plural, ns, reqs)
        if rv_s in ("", "0"):
            for (ons, _), o in sorted(self.objects[plural].items()):
                if (ns is None or ons == ns) and matches(o, reqs):
                    w.queue.put_nowait(("ADDED", copy.deepcopy(o)))
        elif int(rv_s) < self.compacted_rv:
            w.queue.put_nowait(("ERROR", _gone(int(rv_s), self.compacted_rv)))
            w.queue.put_nowait(("__CLOSE__", {}))
        else:
            for rv, p, typ, o in self.history:
                if rv > int(rv_s) and w.wants(p, o):
                    w.queue.put_nowait((typ, copy.deepcopy(o)))
        self.watches.append(w)
        return StreamingResponse(self._stream(w, timeout), media_type="application/json")

    async def _stream(self, w: _Watch, timeout: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        try:
            while (left := end - loop.time()) > 0:
                try:
                    typ, obj = await asyncio.wait_for(w.queue.get(), timeout=min(left, 1.0))
                except TimeoutError:
                    continue
                if typ == "__CLOSE__":
                    break
                yield json.dumps({"type": typ, "object": obj}).encode() + b"\n"
        finally:
            with contextlib.suppress(ValueError):
                self.watches.remove(w)

    async def stop(self) -> None:
        for w in list(self.watches):  # end the streams, as an apiserver restart would
            w.queue.put_nowait(("__CLOSE__", {}))
        await super().stop()

    def kubeconfig(self, path: str) -> str:
        import yaml

        with open(path, "w") as f:
            yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            }, f)
        return path


# ---- object builders -------------------------------------------------------------------------
def service(name: str, ports: list[tuple[int, str]] | None = None, *,
            annotations: dict[str, str] | None = None, lb_class: str | None = "loxilb.io/loxilb",
            **spec: Any) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "type": "LoadBalancer", "selector": {"app": name},
        "ports": [{"name": f"p{port}", "port": port, "protocol": proto, "targetPort": port}
                  for port, proto in (ports or [(80, "TCP")])],
    }
    if lb_class is not None:
        body_spec["loadBalancerClass"] = lb_class
    body_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": dict(annotations or {})},
            "spec": body_spec}


def endpoint_slice(svc: str, addresses: list[str | tuple[str, bool, str]], *,
                   ports: list[tuple[str, int, str]] | None = None,
                   name: str | None = None, address_type: str = "IPv4") -> dict[str, Any]:
    """addresses: "ip" (ready, no node) or (ip, ready, nodeName)."""
    eps = []
    for a in addresses:
        ip, ready, node = (a, True, "") if isinstance(a, str) else a
        ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
        if node:
            ep["nodeName"] = node
        eps.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{svc}-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "endpoints": eps,
            "ports": [{"name": n, "port": p, "protocol": pr}
                      for n, p, pr in (ports or [("p80", 8080, "TCP")])]}


def node(name: str, ip: str, *, ready: bool = True, labels: dict[str, str] | None = None,
         ip6: str = "") -> dict[str, Any]:
    """A Node with an InternalIP (and a second, IPv6 one when `ip6` is given: dual-stack)."""
    addrs = [{"type": "InternalIP", "address": ip}]
    if ip6:
        addrs.append({"type": "InternalIP", "address": ip6})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "status": {"addresses": [*addrs, {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


# ---- pyloxi side -----------------------------------------------------------------------------
class FakeLoxi(Served):
    """The LB-rule calls the agent makes, answered as loxilb does (where a test wants another
    implementation than pyloxi's engine)."""

    def __init__(self) -> None:
        b = "/netlox/v1/config/loadbalancer"
        super().__init__(Starlette(routes=[
            Route("/netlox/v1/version", self.version),
            Route(f"{b}/all", self.list_all),
            Route(b, self.post, methods=["POST"]),
            Route(f"{b}/externalipaddress/{{ip}}/port/{{port}}/protocol/{{proto}}",
                  self.delete_key, methods=["DELETE"]),
        ]))
        self.rules: dict[tuple[str, int, str, int], dict[str, Any]] = {}

    @staticmethod
    def _err(code: int, msg: str) -> JSONResponse:
        return JSONResponse({"code": code, "message": msg, "result": msg}, status_code=code)

    async def post(self, request: Request) -> Response:
        body = await request.json()
        sa = body.get("serviceArguments") or {}
        if not sa.get("externalIP") or not 1 <= len(body.get("endpoints") or []) <= 32:
            return self._err(400, "malformed service-args error")
        key = (str(sa["externalIP"]), int(sa.get("port") or 0),
               str(sa.get("protocol", "tcp")).lower(), int(sa.get("block") or 0))
        if self.rules.get(key) == body:
            return self._err(409, "lbrule-exists error")
        self.rules[key] = body
        return JSONResponse({"result": "Success"})

    async def list_all(self, request: Request) -> Response:
        return JSONResponse({"lbAttr": list(self.rules.values())})

    async def delete_key(self, request: Request) -> Response:
        m = request.path_params
        key = (m["ip"], int(m["port"]), m["proto"], int(request.query_params.get("block", "0")))
        if self.rules.pop(key, None) is None:
            return self._err(404, "no-rule error")
        return JSONResponse({"result": "Success"})

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": "fake", "buildInfo": ""})


class RealLoxi(Served):
    """The real pyloxi REST app (Engine + MemoryDatapath), on a host with an address of each
    family (NAT64 rules need the host's IPv4 address toward their endpoints)."""

    def __init__(self) -> None:
        from pyloxi.api.app import create_app
        from pyloxi.datapath.memory import MemoryDatapath
        from pyloxi.engine import Engine

        def source(ip: str) -> str:
            return "fd00::fe" if ":" in ip else "10.1.0.254"

        super().__init__(create_app(Engine(MemoryDatapath(), snat_source=source),
                                    version="test"))
