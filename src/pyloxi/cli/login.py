"""`pyloxi set login|logout|refresh` (loxicmd's set_login.go), for a daemon with --userservice.

    pyloxi set login [--user U]          # password from a prompt, or stdin when not a terminal
    pyloxi set refresh                   # a new token for the stored one (the old stops working)
    pyloxi set logout                    # the server revokes the token; its file is removed
    pyloxi set login --provider manual   # store a token given on stdin (loxicmd's manual)

The token goes to --token-file, else $PYLOXI_TOKEN_FILE, else $XDG_CONFIG_HOME/pyloxi/token
(~/.config/pyloxi/token), written with mode 0600; the other commands read it from there.
loxicmd writes /tmp/loxilbtoken with mode 0644, which any local user can read: not copied.
A password or token never travels in the process arguments (every local user can read them).
loxicmd's OAuth providers (google, github) cannot work here: pyloxi has none.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pyloxi.cli import render
from pyloxi.cli.client import client_for, fail, reporting, settings_of
from pyloxi.cli.groups import set_app
from pyloxi.client.tokens import visible_ascii

LOCAL = ("", "local")

ProviderOpt = Annotated[str, typer.Option(
    "--provider", help="local (the default: the daemon's users) or manual (a token you have)")]


def _check_provider(provider: str, allowed: tuple[str, ...]) -> str:
    name = provider.strip().lower()
    if name not in allowed:
        fail(f"--provider {provider!r} is not supported: pyloxi has no OAuth2 providers "
             f"(use {' or '.join(a for a in allowed if a) or 'local'})", 2)
    return name


def _read(prompt: str, *, secret: bool) -> str:
    """One value from the terminal (hidden if secret), else one line of stdin."""
    if sys.stdin.isatty():
        value: str = typer.prompt(prompt, hide_input=secret)
        return value.strip()
    line = sys.stdin.readline()
    if not line:
        fail(f"{prompt.lower()}: nothing on stdin", 2)
    return line.rstrip("\r\n").strip() if not secret else line.rstrip("\r\n")


def save_token(path: str, token: str) -> None:
    """Write the token file readable by its owner only (directory 0700 if created)."""
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.replace(tmp, target)


def _store(ctx: typer.Context, token: object) -> None:
    if not isinstance(token, str) or not token or not visible_ascii(token):
        fail("the server answered no usable token")
    path = settings_of(ctx).token_path
    try:
        save_token(path, token)
    except OSError as exc:
        fail(f"cannot write the token to {path}: {exc.strerror or exc}")


def _done(ctx: typer.Context, what: str) -> None:
    settings = settings_of(ctx)
    if settings.json:  # never the token itself: it is in the file
        render.print_json({"result": what, "tokenFile": settings.token_path})
    else:
        typer.echo(what)


@set_app.command("login")
def login(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", "-u", help="user name "
                                             "(default: asked)")] = None,
    provider: ProviderOpt = "",
) -> None:
    """Log in and keep the token for the next commands."""
    name = _check_provider(provider, ("", "local", "manual"))
    if name == "manual":
        token = _read("Enter Access Token", secret=True).strip()
        if not token or not visible_ascii(token):
            fail("the token must be visible ASCII without spaces", 2)
        _store(ctx, token)
        _done(ctx, "Login Success")
        return
    username = user if user is not None else _read("Enter ID", secret=False)
    password = _read("Enter Password", secret=True)
    if not username or not password:
        fail("a user name and a password are needed", 2)
    with reporting(), client_for(ctx) as api:
        answer = api.post("/auth/login", {"username": username, "password": password})
    _store(ctx, answer.get("token") if isinstance(answer, dict) else None)
    _done(ctx, "Login Success")


@set_app.command("logout")
def logout(ctx: typer.Context, provider: ProviderOpt = "") -> None:
    """Revoke the token (the server forgets it) and remove its file."""
    name = _check_provider(provider, ("", "local", "manual"))
    settings = settings_of(ctx)
    if name in LOCAL:
        if not settings.token:
            fail(f"not logged in: no token (looked in {settings.token_path})", 2)
        with reporting(), client_for(ctx) as api:
            api.post("/auth/logout", {})
    try:
        os.remove(settings.token_path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        fail(f"cannot remove {settings.token_path}: {exc.strerror or exc}")
    _done(ctx, "Logout Success")


@set_app.command("refresh")
def refresh(ctx: typer.Context, provider: ProviderOpt = "") -> None:
    """Swap the stored login token for a new one (the old one stops working)."""
    _check_provider(provider, LOCAL)
    if not settings_of(ctx).token:
        fail(f"not logged in: no token (looked in {settings_of(ctx).token_path})", 2)
    with reporting(), client_for(ctx) as api:
        answer = api.post("/auth/token/upgrade", {})
    _store(ctx, answer.get("token") if isinstance(answer, dict) else None)
    _done(ctx, "Refresh Success")
