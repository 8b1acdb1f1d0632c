"""HTTP and HTTPS probes (httpx): up iff status 200 and, if `proberesp` is set, the body matches.

- The URL is `<scheme>://<ip>:<port>/<probereq>`. Without an expected body the request is a
  HEAD (as loxilb's http prober does); with one it is a GET.
- No connection is kept between probes (each probe must see the server as a new client would).
- TLS: the server certificate is verified against the system roots plus, when present,
  `<cert_dir>/rootCA.crt` and `<cert_dir>/<ip>/rootCA.crt` (loxilb's layout) or the target's own
  `ca_file`. A client certificate (mTLS) is sent when `cert_file`/`key_file` are set on the target
  or `<cert_dir>/server.crt` + `server.key` exist.
"""

from __future__ import annotations

import os
import ssl

import httpx

from pyloxi.probes.types import ProbeResult, ProbeTarget

DEFAULT_CERT_DIR = "/opt/loxilb/cert"


def body_matches(body: bytes, want: str) -> bool:
    exp = want.encode()
    return body == exp or body.strip() == exp.strip()


class HttpProber:
    def __init__(self, cert_dir: str | None = DEFAULT_CERT_DIR) -> None:
        self.cert_dir = cert_dir
        self._clients: dict[tuple[object, ...], httpx.AsyncClient] = {}

    def _tls_files(self, t: ProbeTarget) -> tuple[tuple[str, ...], str | None, str | None]:
        cas: list[str] = []
        if t.ca_file:
            cas.append(t.ca_file)
        elif self.cert_dir:
            for path in (os.path.join(self.cert_dir, "rootCA.crt"),
                         os.path.join(self.cert_dir, t.ip, "rootCA.crt")):
                if os.path.isfile(path):
                    cas.append(path)
        cert, key = t.cert_file, t.key_file
        if cert is None and self.cert_dir:
            c = os.path.join(self.cert_dir, "server.crt")
            k = os.path.join(self.cert_dir, "server.key")
            if os.path.isfile(c) and os.path.isfile(k):
                cert, key = c, k
        return tuple(cas), cert, key

    def _client(self, t: ProbeTarget) -> httpx.AsyncClient:
        if t.ptype == "https":
            cas, cert, key = self._tls_files(t)
            ckey: tuple[object, ...] = ("https", cas, cert, key, t.tls_verify)
        else:
            cas, cert, key = (), None, None
            ckey = ("http",)
        client = self._clients.get(ckey)
        if client is None:
            verify: ssl.SSLContext | bool = False
            if t.ptype == "https":
                ctx = ssl.create_default_context()
                for ca in cas:
                    ctx.load_verify_locations(cafile=ca)
                if cert:
                    ctx.load_cert_chain(cert, key)
                if not t.tls_verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                verify = ctx
            client = httpx.AsyncClient(
                verify=verify,
                limits=httpx.Limits(max_keepalive_connections=0, max_connections=None),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": "pyloxi-probe", "Connection": "close"},
            )
            self._clients[ckey] = client
        return client

    async def probe(self, t: ProbeTarget, timeout: float) -> ProbeResult:
        host = f"[{t.ip}]" if ":" in t.ip else t.ip
        path = t.req.lstrip("/")
        url = f"{t.ptype}://{host}:{t.port}/{path}"
        method = "GET" if t.resp else "HEAD"
        try:
            client = self._client(t)
        except (OSError, ssl.SSLError) as exc:
            return ProbeResult(False, f"{t.ptype} tls setup failed: {exc}")
        try:
            resp = await client.request(method, url, timeout=httpx.Timeout(timeout))
        except httpx.TimeoutException:
            return ProbeResult(False, f"{t.ptype} timeout after {timeout:g}s")
        except httpx.ConnectError as exc:
            return ProbeResult(False, f"{t.ptype} connect failed: {_short(exc)}")
        except httpx.HTTPError as exc:
            return ProbeResult(False, f"{t.ptype} error: {_short(exc)}")
        if resp.status_code != 200:
            return ProbeResult(False, f"{t.ptype} status {resp.status_code}")
        if t.resp and not body_matches(resp.content, t.resp):
            return ProbeResult(False, f"{t.ptype} body mismatch: got {resp.content[:64]!r}")
        return ProbeResult(True, f"{t.ptype} 200")

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
