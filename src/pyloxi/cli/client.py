"""The CLI's side of talking to the REST API: settings from flags and env, one-line errors.

The requests themselves are pyloxi.client's (shared with the Kubernetes agent).

Every failure the user can cause or meet ends the same way: one line on stderr, starting with
"Error: ", and an exit code — 2 for bad input (nothing was sent), 1 for API or connection errors.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import urlsplit

import httpx
import typer

from pyloxi import client
from pyloxi.cli.parse import InputError
from pyloxi.client import API_PREFIX, ApiError, path_segment, tokens

__all__ = [
    "API_PREFIX",
    "ApiError",
    "Client",
    "Settings",
    "client_for",
    "fail",
    "make_settings",
    "path_segment",
    "reporting",
    "settings_of",
]

DEFAULT_SERVER = "127.0.0.1"
DEFAULT_PORT = 11111
DEFAULT_TIMEOUT = 10.0
ENV_API = "PYLOXI_API"  # "host", "host:port" or "http(s)://host:port"
# The API token: never a flag's value (argv is readable by every local user in /proc).
ENV_TOKEN = "PYLOXI_TOKEN"  # the token itself
ENV_TOKEN_FILE = "PYLOXI_TOKEN_FILE"  # a file holding it (first line that is not a comment)
ENV_CACERT = "PYLOXI_CACERT"  # CA (or the server's own certificate) to check https against
# Where `pyloxi set login` keeps its token (mode 0600) when neither --token-file nor
# PYLOXI_TOKEN_FILE names a file, and where the CLI looks last: $XDG_CONFIG_HOME/pyloxi/token.
# Not loxicmd's /tmp/loxilbtoken: a fixed name in /tmp can be planted or read by others.
TOKEN_FILE_NAME = "pyloxi/token"
OUTPUTS = ("wide", "json")


@dataclass(frozen=True, slots=True)
class Settings:
    server: str = DEFAULT_SERVER
    port: int = DEFAULT_PORT
    scheme: str = "http"
    output: str = ""  # "" (table), "wide" or "json"
    timeout: float = DEFAULT_TIMEOUT
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    token_path: str = ""  # the file login writes and logout removes (default_token_file)

    @property
    def base_url(self) -> str:
        host = f"[{self.server}]" if ":" in self.server else self.server
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def json(self) -> bool:
        return self.output == "json"

    @property
    def wide(self) -> bool:
        return self.output == "wide"


def _from_env(value: str) -> tuple[str | None, int | None, str | None]:
    """PYLOXI_API -> (server, port, scheme); None where the variable says nothing."""
    value = value.strip()
    if not value:
        return None, None, None
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise InputError(f"invalid {ENV_API} {value!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"invalid {ENV_API} {value!r}: expected host[:port] or http(s)://host:port"
        )
    return parts.hostname, port, parts.scheme


def read_token_file(path: str, what: str = "--token-file") -> str:
    try:
        return tokens.read_token_file(path, what)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def default_token_file(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_CONFIG_HOME", "").strip() or os.path.join(
        environ.get("HOME", "").strip() or os.path.expanduser("~"), ".config")
    return os.path.join(base, TOKEN_FILE_NAME)


def token_path(token_file: str | None, environ: Mapping[str, str]) -> str:
    """The token's file: --token-file, else $PYLOXI_TOKEN_FILE, else the login default."""
    return token_file or environ.get(ENV_TOKEN_FILE, "").strip() or default_token_file(environ)


def _token(token_file: str | None, environ: Mapping[str, str],
           optional: bool = False) -> str | None:
    """--token-file, else $PYLOXI_TOKEN, else $PYLOXI_TOKEN_FILE, else the file `pyloxi set
    login` wrote, if any. `optional` (the login verbs): a file that does not exist yet is no
    token rather than an error."""
    if token_file:
        if optional and not os.path.exists(token_file):
            return None
        return read_token_file(token_file)
    if environ.get(ENV_TOKEN, "").strip():
        token = environ[ENV_TOKEN].strip()
        if not tokens.visible_ascii(token):
            raise InputError(f"invalid {ENV_TOKEN}: the token is not visible ASCII")
        return token
    if environ.get(ENV_TOKEN_FILE, "").strip():
        path = environ[ENV_TOKEN_FILE].strip()
        if optional and not os.path.exists(path):
            return None
        return read_token_file(path, ENV_TOKEN_FILE)
    default = default_token_file(environ)
    if os.path.exists(default):
        return read_token_file(default, "token file (pyloxi set login)")
    return None


def _ca_file(ca_file: str | None, environ: Mapping[str, str]) -> str | None:
    path = ca_file or environ.get(ENV_CACERT, "").strip() or None
    if path is not None:
        try:  # load it once here: a bad file is an input error (exit 2), nothing was sent
            ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InputError(f"invalid --cacert {path!r}: {reason}") from None
    return path


def make_settings(
    server: str | None,
    port: int | None,
    output: str | None,
    timeout: float | None,
    scheme: str | None = None,
    env: Mapping[str, str] | None = None,
    token_file: str | None = None,
    ca_file: str | None = None,
    token_optional: bool = False,
) -> Settings:
    """Flags win over PYLOXI_API (PYLOXI_TOKEN..., PYLOXI_CACERT), which win over defaults."""
    environ: Mapping[str, str] = os.environ if env is None else env
    env_server, env_port, env_scheme = _from_env(environ.get(ENV_API, ""))
    out = (output or "").lower()
    if out not in ("", *OUTPUTS):
        raise InputError(f"invalid --output {output!r}: expected wide or json")
    sch = (scheme or env_scheme or "http").lower()
    if sch not in ("http", "https"):
        raise InputError(f"invalid --protocol {scheme!r}: expected http or https")
    if port is not None and not 1 <= port <= 65535:
        raise InputError(f"invalid --port {port}: must be 1-65535")
    if timeout is not None and timeout <= 0:
        raise InputError(f"invalid --timeout {timeout}: must be positive")
    return Settings(
        server=server or env_server or DEFAULT_SERVER,
        port=port or env_port or DEFAULT_PORT,
        scheme=sch,
        output=out,
        timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
        token=_token(token_file, environ, token_optional),
        ca_file=_ca_file(ca_file, environ),
        token_path=token_path(token_file, environ),
    )


class Client(client.Client):
    """The /netlox/v1 client the CLI's settings describe."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(settings.base_url, timeout=settings.timeout, transport=transport,
                         token=settings.token, ca_file=settings.ca_file)
        self.settings = settings


def settings_of(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


# Tests may set this to route every Client through another transport (e.g. a MockTransport).
transport_override: httpx.BaseTransport | None = None


def client_for(ctx: typer.Context) -> Client:
    return Client(settings_of(ctx), transport=transport_override)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def reporting() -> Iterator[None]:
    """Turn InputError into exit 2 and ApiError into exit 1, each as one line on stderr."""
    try:
        yield
    except InputError as exc:
        fail(str(exc), 2)
    except ApiError as exc:
        fail(exc.message, 1)
