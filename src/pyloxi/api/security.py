"""API authentication (loxilb's `--manualtoken` mode) and the TLS listener's checks.

Tokens live in a file, one per line (blank lines and `# comments` ignored), never in the
process arguments (which every local user can read in /proc). The file is read again when it
changes (checked on each request: one stat) and on `reload()` (the daemon's SIGHUP), so a
token is added or revoked without a restart. A missing or unreadable file refuses every
request: revoking by deleting the file must not open the API.

A request carries its token in the `Authorization` header, either bare (what loxilb and
loxicmd send: Swagger `BearerAuth` is an apiKey header) or as `Bearer <token>` (RFC 6750).
Comparison is constant-time over SHA-256 digests, against every token in the file, so neither
the time to answer nor an early exit tells how much of a guess was right.

Failures answer loxilb's error object with 401: without a header `unauthenticated for invalid
credentials` (go-openapi's words), with a wrong token `invalid token` (loxilb's
ManualTokenValidate; loxilb itself turns that one into a 500, a bug not copied here). Exempt
(as loxilb's `security: []` routes): GET/HEAD of /version and of the OpenAPI document and its
viewer, so health checks (keepalived's `curl .../version`) keep working; routers add their own
(`open_calls`: loxilb's POST /auth/login, GET /oauth/...).

A check that also `identify`s a token (api/users.py: login sessions beside the manual tokens)
puts the caller's `Principal` in the request's state. A `viewer` may only read (GET/HEAD) and
log out, as in loxilb (handler/auth.go Authorized); anything else answers 403.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import uvicorn

from pyloxi.api.guard import ASGIApp, Receive, Scope, Send, answer

log = logging.getLogger("pyloxi.api.security")

MISSING_CREDENTIALS: Final = "unauthenticated for invalid credentials"
INVALID_TOKEN: Final = "invalid token"
PERMISSION_DENIED: Final = "Permission denied"  # loxilb's words (handler/auth.go)
MAX_TOKEN_BYTES: Final = 4096
# the TLS listener's ciphers for TLS 1.2 (1.3 suites are not affected): forward secrecy and
# AEAD only. uvicorn's default ("TLSv1") would replace Python's safer default list.
TLS_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


class TokenCheck(Protocol):
    def accepts(self, token: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request's token belongs to. `session`: the digest of a login token (None for a
    manual token), which logout revokes and refresh replaces."""

    name: str
    role: str  # "admin" or "viewer"
    session: bytes | None = None


MANUAL_PRINCIPAL: Final = Principal("manual-token", "admin")


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _valid_token(line: str) -> bool:
    """A token must travel in an HTTP header unchanged: visible ASCII, no spaces."""
    return bool(line) and line.isascii() and line.isprintable() and " " not in line \
        and "\t" not in line and len(line) <= MAX_TOKEN_BYTES


def parse_tokens(text: str) -> tuple[list[bytes], list[int]]:
    """(tokens, line numbers of refused lines) of a token file's text."""
    tokens: list[bytes] = []
    bad: list[int] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _valid_token(line):
            tokens.append(line.encode("ascii"))
        else:
            bad.append(number)
    return tokens, bad


class TokenFile:
    """The accepted tokens, from a file kept up to date (module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._digests: tuple[bytes, ...] = ()
        self._seen: tuple[int, ...] | None = None  # stat identity of what was loaded
        self._failed = False
        # At start a missing, unreadable or empty file is an error: a daemon that refuses
        # every request is not what anyone asked for.
        count = self.reload()
        if self._failed:
            raise ValueError(f"token file {self.path}: cannot be read")
        if count == 0:
            raise ValueError(f"token file {self.path}: no token in it (one per line)")

    def __repr__(self) -> str:  # never the tokens
        return f"TokenFile({str(self.path)!r}, {len(self._digests)} tokens)"

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def reload(self) -> int:
        """Read the file again (SIGHUP); returns how many tokens it holds now."""
        with self._lock:
            seen = self._stat()
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                if not self._failed:
                    log.error("token file %s unreadable, refusing every request: %s",
                              self.path, exc.strerror or exc)
                self._failed = True
                self._digests = ()
                self._seen = seen
                return 0
            tokens, bad = parse_tokens(text)
            for number in bad:
                log.warning("token file %s line %d ignored: not a token (visible ASCII, "
                            "no spaces, at most %d bytes)", self.path, number, MAX_TOKEN_BYTES)
            self._digests = tuple(_digest(t) for t in tokens)
            self._seen = seen
            self._failed = False
            self._warn_mode(seen)
            log.info("token file %s: %d tokens", self.path, len(tokens))
            return len(tokens)

    def _warn_mode(self, seen: tuple[int, ...] | None) -> None:
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return
        if seen is not None and mode & 0o077:
            log.warning("token file %s is readable by others (mode %o): chmod 600 it",
                        self.path, mode & 0o777)

    def _current(self) -> tuple[bytes, ...]:
        if self._stat() != self._seen:
            self.reload()
        return self._digests

    def accepts(self, token: bytes) -> bool:
        digest = _digest(token)
        ok = False
        for known in self._current():
            ok |= hmac.compare_digest(known, digest)  # no early exit: every token is compared
        return ok


def presented_token(header: bytes) -> bytes:
    """The token of an Authorization header: `Bearer <t>` or a bare `<t>` (loxilb)."""
    value = header.strip()
    scheme, _, rest = value.partition(b" ")
    if scheme.lower() == b"bearer" and rest.strip():
        return rest.strip()
    return value


class TokenAuth:
    """ASGI middleware: a request without an accepted token gets 401 before anything reads its
    body or routes it; `exempt` paths (GET/HEAD only) need none."""

    def __init__(self, app: ASGIApp, *, tokens: TokenCheck, exempt: Iterable[str],
                 open_calls: Iterable[tuple[str, str]] = (),
                 viewer_may: Iterable[tuple[str, str]] = ()) -> None:
        """`open_calls`: (METHOD, path) that need no token; a path ending in "/" opens every
        path under it. `viewer_may`: (METHOD, path) a viewer may call beside GET/HEAD."""
        self.app = app
        self.tokens = tokens
        self.exempt = frozenset(exempt)
        self.open_calls = frozenset((m.upper(), p) for m, p in open_calls)
        self.viewer_may = frozenset((m.upper(), p) for m, p in viewer_may)

    def _open(self, method: str, path: str) -> bool:
        if method in ("GET", "HEAD") and path in self.exempt:
            return True
        return any(m == method and (path == p or (p.endswith("/") and path.startswith(p)))
                   for m, p in self.open_calls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope.get("method", "GET")).upper()
        if scope["type"] != "http" or self._open(method, str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope.get("headers", ()):
            if key.lower() == b"authorization":
                header = bytes(value)
                break
        if header is None or not header.strip():
            await _refuse(send, MISSING_CREDENTIALS)
            return
        token = presented_token(header)
        who = None if len(token) > MAX_TOKEN_BYTES else self._identify(token)
        if who is None:
            await _refuse(send, INVALID_TOKEN)
            return
        if who.role != "admin" and method not in ("GET", "HEAD") \
                and (method, scope.get("path")) not in self.viewer_may:
            await answer(send, 403, PERMISSION_DENIED)
            return
        scope.setdefault("state", {})["principal"] = who  # request.state.principal
        await self.app(scope, receive, send)

    def _identify(self, token: bytes) -> Principal | None:
        identify = getattr(self.tokens, "identify", None)
        if identify is not None:
            who: Principal | None = identify(token)
            return who
        return MANUAL_PRINCIPAL if self.tokens.accepts(token) else None


async def _refuse(send: Send, message: str) -> None:
    await answer(send, 401, message, headers=[(b"www-authenticate", b'Bearer realm="pyloxi"')])


def check_tls_files(certificate: str, key: str) -> None:
    """Load the listener's certificate and key once, so a wrong path or a key that does not
    match fails the daemon's start with a clear line instead of its first TLS handshake."""
    for what, path in (("--tls-certificate", certificate), ("--tls-key", key)):
        if not Path(path).is_file():
            raise ValueError(f"{what} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"--tls-certificate/--tls-key: cannot load {certificate} with "
                         f"{key}: {exc}") from None


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone: SIGINT/SIGTERM stay
    with the daemon's plain listener (which raises them again once it has shut down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def tls_server(app: Any, host: str, port: int, certificate: str, key: str) -> uvicorn.Server:
    """The HTTPS listener of `app` (the daemon sets its should_exit when it stops)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                            ssl_certfile=certificate, ssl_keyfile=key, ssl_ciphers=TLS_CIPHERS)
    return _QuietServer(config)


def loopback_only(hosts: Sequence[str]) -> bool:
    """Whether every listen address is a loopback one (nobody else can reach the API)."""
    def loopback(host: str) -> bool:
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    return all(loopback(h) for h in hosts)
