"""A fake Kubernetes API server (aiohttp, real HTTP) and a fake pyloxi REST API, for tests.

The Kubernetes fake behaves like kube-apiserver where the agent depends on it:
* one global resourceVersion; every write bumps it; PUT with a stale metadata.resourceVersion
  answers 409 Conflict; POST of an existing name answers 409 AlreadyExists;
* list answers `metadata.resourceVersion`; label selectors (`k`, `!k`, `k=v`, `k!=v`,
  `k in (a,b)`, `k notin (a,b)`) on list and watch;
* watch (`?watch=1&resourceVersion=N`) streams chunked JSON lines from the event history after
  N; a resourceVersion older than the compacted history gets an ERROR event with code 410
  (what the apiserver sends); `timeoutSeconds` ends the stream;
* `/status` subresource: PUT there changes only `status`; PUT on the object keeps `status`;
* Services get uid, creationTimestamp and NodePorts (for NodePort/LoadBalancer) on write;
* Events are stored like any namespaced object.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import re
import socket
import uuid
from typing import Any

from aiohttp import web

# plural → (group/version prefix, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "services": ("/api/v1", "Service", True),
    "nodes": ("/api/v1", "Node", False),
    "events": ("/api/v1", "Event", True),
    "pods": ("/api/v1", "Pod", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "EndpointSlice", True),
}
KIND_TO_PLURAL = {v[1]: k for k, v in RESOURCES.items()}
API_VERSION = {"services": "v1", "nodes": "v1", "events": "v1", "pods": "v1",
               "endpointslices": "discovery.k8s.io/v1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": message, "reason": reason, "code": code}, status=code)


def _gone(since: int, oldest: int) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
            "message": f"too old resource version: {since} ({oldest})", "code": 410}


_SEL = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def parse_selector(sel: str) -> list[tuple[str, str, Any]]:
    reqs: list[tuple[str, str, Any]] = []
    if not sel:
        return reqs
    parts, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    parts.append(cur)
    for p in (x.strip() for x in parts if x.strip()):
        m = _SEL.match(p)
        if m:
            reqs.append((m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}))
        elif "!=" in p:
            k, v = p.split("!=", 1)
            reqs.append((k.strip(), "!=", v.strip()))
        elif "==" in p or "=" in p:
            k, v = p.split("==", 1) if "==" in p else p.split("=", 1)
            reqs.append((k.strip(), "=", v.strip()))
        elif p.startswith("!"):
            reqs.append((p[1:].strip(), "!", None))
        else:
            reqs.append((p, "exists", None))
    return reqs


def matches(obj: dict[str, Any], reqs: list[tuple[str, str, Any]]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for key, op, val in reqs:
        have = labels.get(key)
        ok = {"exists": key in labels, "!": key not in labels, "=": have == val,
              "!=": have != val, "in": have in (val or set()),
              "notin": have not in (val or set())}[op]
        if not ok:
            return False
    return True


class _Watch:
    def __init__(self, plural: str, ns: str | None, reqs: list) -> None:
        self.plural, self.ns, self.reqs = plural, ns, reqs
        self.queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()

    def wants(self, plural: str, obj: dict) -> bool:
        if plural != self.plural:
            return False
        if self.ns and obj["metadata"].get("namespace") != self.ns:
            return False
        return matches(obj, self.reqs)


class FakeKube:
    """In-memory apiserver. Test code may use the python methods (create/update/...) directly;
    they notify watches exactly like HTTP writes do."""

    def __init__(self) -> None:
        self.rv = 100
        self.objects: dict[str, dict[tuple[str, str], dict]] = {p: {} for p in RESOURCES}
        self.history: list[tuple[int, str, str, dict]] = []  # (rv, plural, type, obj)
        self.compacted_rv = 0  # watches from below this get 410
        self.watches: list[_Watch] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_status_puts = 0  # answer this many /status PUTs with 409 (tests)
        self._node_port = 30000
        self.runner: web.AppRunner | None = None
        self.url = ""

    # ---- store -------------------------------------------------------------------------
    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, plural: str, typ: str, obj: dict) -> None:
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

    def _defaults(self, plural: str, obj: dict, old: dict | None) -> None:
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
                    if not p.get("nodePort") and spec.get(
                            "allocateLoadBalancerNodePorts", True):
                        self._node_port += 1
                        p["nodePort"] = self._node_port
                else:
                    p.pop("nodePort", None)
            if spec["type"] != "LoadBalancer" and old is not None:
                obj.setdefault("status", {})["loadBalancer"] = {}
            obj.setdefault("status", {}).setdefault("loadBalancer", {})

    def create(self, obj: dict) -> dict:
        plural = KIND_TO_PLURAL[obj["kind"]]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if RESOURCES[plural][2]:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        key = (meta.get("namespace", ""), meta["name"])
        if key in self.objects[plural]:
            raise KeyError("exists")
        self._defaults(plural, obj, None)
        meta["resourceVersion"] = self._bump()
        self.objects[plural][key] = obj
        self._record(plural, "ADDED", obj)
        return copy.deepcopy(obj)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict | None:
        plural = KIND_TO_PLURAL[kind]
        ns = namespace if RESOURCES[plural][2] else ""
        obj = self.objects[plural].get((ns, name))
        return copy.deepcopy(obj) if obj else None

    def update(self, obj: dict, *, subresource: str = "", check_rv: bool = True) -> dict:
        """PUT semantics; raises ValueError('conflict') on a stale resourceVersion."""
        plural = KIND_TO_PLURAL[obj["kind"]]
        meta = obj["metadata"]
        ns = meta.get("namespace", "default") if RESOURCES[plural][2] else ""
        key = (ns, meta["name"])
        old = self.objects[plural].get(key)
        if old is None:
            raise LookupError("not found")
        rv = meta.get("resourceVersion")
        if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
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

    def patch(self, kind: str, name: str, namespace: str = "default", **changes: Any) -> dict:
        """Read-modify-write helper for tests: changes are deep-merged dicts."""
        obj = self.get(kind, name, namespace)
        assert obj is not None, f"{kind} {namespace}/{name} missing"

        def merge(dst: dict, src: dict) -> None:
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

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        plural = KIND_TO_PLURAL[kind]
        return [copy.deepcopy(o) for (ns, _), o in sorted(self.objects[plural].items())
                if namespace is None or ns == namespace]

    def events_for(self, name: str, namespace: str = "default") -> list[dict]:
        return [e for e in self.list("Event", namespace)
                if e.get("involvedObject", {}).get("name") == name]

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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        route = self._route(request.path)
        if route is None:
            return _status(404, "NotFound", f"the server could not find {request.path}")
        plural, ns, name, sub = route
        kind = RESOURCES[plural][1]
        namespaced = RESOURCES[plural][2]
        q = request.query
        if request.method == "GET" and name is None:
            reqs = parse_selector(q.get("labelSelector", ""))
            if q.get("watch") in ("1", "true"):
                return await self._watch(request, plural, ns, reqs)
            items = [copy.deepcopy(o) for (ons, _), o in sorted(self.objects[plural].items())
                     if (ns is None or ons == ns) and matches(o, reqs)]
            return web.json_response({"kind": f"{kind}List", "apiVersion": API_VERSION[plural],
                                      "metadata": {"resourceVersion": str(self.rv)},
                                      "items": items})
        key = (ns or "", name or "") if namespaced else ("", name or "")
        if request.method == "GET":
            obj = self.objects[plural].get(key)
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            return web.json_response(obj)
        if request.method == "POST" and name is None:
            body = await request.json()
            body.setdefault("kind", kind)
            if namespaced:
                body.setdefault("metadata", {})["namespace"] = ns or "default"
            try:
                return web.json_response(self.create(body), status=201)
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
                return web.json_response(self.update(body, subresource=sub))
            except LookupError:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            except ValueError:
                return _status(409, "Conflict",
                               f'Operation cannot be fulfilled on {plural} "{name}": the object '
                               "has been modified; please apply your changes to the latest "
                               "version and try again")
        if request.method == "DELETE" and name:
            if key not in self.objects[plural]:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            self.delete(kind, name, ns or "default")
            return web.json_response({"kind": "Status", "status": "Success"})
        return _status(405, "MethodNotAllowed", f"{request.method} not allowed")

    async def _watch(self, request: web.Request, plural: str, ns: str | None,
                     reqs: list) -> web.StreamResponse:
        rv_s = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(typ: str, obj: dict) -> None:
            await resp.write(json.dumps({"type": typ, "object": obj}).encode() + b"\n")

        w = _Watch(plural, ns, reqs)
        if rv_s in ("", "0"):
            for (ons, _), o in sorted(self.objects[plural].items()):
                if (ns is None or ons == ns) and matches(o, reqs):
                    w.queue.put_nowait(("ADDED", copy.deepcopy(o)))
        else:
            since = int(rv_s)
            if since < self.compacted_rv:
                await send("ERROR", _gone(since, self.compacted_rv))
                return resp
            for rv, p, typ, o in self.history:
                if rv > since and w.wants(p, o):
                    w.queue.put_nowait((typ, copy.deepcopy(o)))
        self.watches.append(w)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        try:
            while True:
                left = end - loop.time()
                if left <= 0:
                    break
                try:
                    typ, obj = await asyncio.wait_for(w.queue.get(), timeout=min(left, 1.0))
                except TimeoutError:
                    continue
                if typ == "__CLOSE__":
                    break
                await send(typ, obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.remove(w)
        return resp

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        port = free_port()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close_watches(self) -> None:
        """Drop every open watch stream (as an apiserver restart would)."""
        for w in list(self.watches):
            w.queue.put_nowait(("__CLOSE__", {}))

    async def stop(self) -> None:
        await self.close_watches()
        await asyncio.sleep(0.05)
        if self.runner is not None:
            await self.runner.cleanup()

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
def service(name: str, ports: list[tuple[int, str]] | None = None, *, namespace: str = "default",
            annotations: dict[str, str] | None = None, lb_class: str | None = "loxilb.io/loxilb",
            type_: str = "LoadBalancer", **spec: Any) -> dict:
    body_spec: dict[str, Any] = {
        "type": type_, "selector": {"app": name},
        "ports": [{"name": f"p{port}", "port": port, "protocol": proto, "targetPort": port}
                  for port, proto in (ports or [(80, "TCP")])],
    }
    if lb_class is not None:
        body_spec["loadBalancerClass"] = lb_class
    body_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": dict(annotations or {})},
            "spec": body_spec}


def endpoint_slice(svc: str, addresses: list[str | tuple[str, bool, str]], *,
                   namespace: str = "default", ports: list[tuple[str, int, str]] | None = None,
                   name: str | None = None, address_type: str = "IPv4") -> dict:
    """addresses: "ip" (ready, no node) or (ip, ready, nodeName)."""
    eps = []
    for a in addresses:
        ip, ready, node = (a, True, "") if isinstance(a, str) else a
        ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
        if node:
            ep["nodeName"] = node
        eps.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{svc}-abc", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "endpoints": eps,
            "ports": [{"name": n, "port": p, "protocol": pr}
                      for n, p, pr in (ports or [("p80", 8080, "TCP")])]}


def node(name: str, ip: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(labels or {})},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


# ---- pyloxi side -----------------------------------------------------------------------------
class FakeLoxi:
    """Minimal /netlox/v1 LB-rule API with loxilb's answers (used until the real app exists)."""

    def __init__(self) -> None:
        self.rules: dict[tuple, dict] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.posts = 0

    @staticmethod
    def _key(sa: dict) -> tuple:
        return (str(sa.get("externalIP")), int(sa.get("port") or 0),
                str(sa.get("protocol", "tcp")).lower(), int(sa.get("block") or 0))

    @staticmethod
    def _ok() -> web.Response:
        return web.json_response({"result": "Success"})

    @staticmethod
    def _err(code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "message": msg, "result": msg}, status=code)

    async def post(self, request: web.Request) -> web.Response:
        body = await request.json()
        sa = body.get("serviceArguments") or {}
        eps = body.get("endpoints") or []
        if not sa.get("externalIP") or not 1 <= len(eps) <= 32:
            return self._err(400, "malformed service-args error")
        key = self._key(sa)
        self.posts += 1
        if self.rules.get(key) == body:
            return self._err(409, "lbrule-exists error")
        self.rules[key] = body
        return self._ok()

    async def list_all(self, request: web.Request) -> web.Response:
        return web.json_response({"lbAttr": list(self.rules.values())})

    async def delete_key(self, request: web.Request) -> web.Response:
        m = request.match_info
        key = (m["ip"], int(m["port"]), m["proto"], int(request.query.get("block", "0")))
        if self.rules.pop(key, None) is None:
            return self._err(404, "no-rule error")
        return self._ok()

    async def delete_name(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for k in [k for k, r in self.rules.items()
                  if r["serviceArguments"].get("name") == name]:
            del self.rules[k]
        return self._ok()

    async def delete_all(self, request: web.Request) -> web.Response:
        self.rules.clear()
        return self._ok()

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "fake", "buildInfo": ""})

    async def start(self) -> str:
        app = web.Application()
        b = "/netlox/v1"
        app.router.add_get(b + "/version", self.version)
        app.router.add_get(b + "/config/loadbalancer/all", self.list_all)
        app.router.add_delete(b + "/config/loadbalancer/all", self.delete_all)
        app.router.add_post(b + "/config/loadbalancer", self.post)
        app.router.add_delete(b + "/config/loadbalancer/name/{name}", self.delete_name)
        app.router.add_delete(
            b + "/config/loadbalancer/externalipaddress/{ip}/port/{port}/protocol/{proto}",
            self.delete_key)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def real_app_available() -> bool:
    try:
        from pyloxi.api.app import create_app  # noqa: F401
        from pyloxi.datapath.memory import MemoryDatapath  # noqa: F401
        from pyloxi.engine import Engine  # noqa: F401
    except ImportError:
        return False
    return True


class RealLoxi:
    """The real pyloxi REST app (Engine + MemoryDatapath) under uvicorn on 127.0.0.1."""

    def __init__(self) -> None:
        self.url = ""
        self._server: Any = None
        self._task: asyncio.Task | None = None

    async def start(self) -> str:
        import uvicorn

        from pyloxi.api.app import create_app
        from pyloxi.datapath.memory import MemoryDatapath
        from pyloxi.engine import Engine

        app = create_app(Engine(MemoryDatapath()), version="test")
        port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                     log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                break
            await asyncio.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._task is not None:
                await self._task
