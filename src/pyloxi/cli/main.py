"""The `pyloxi` command line: loxicmd-compatible verbs over the REST API.

    pyloxi [-s SERVER] [-p PORT] [-o wide|json] [-t SECONDS] VERB OBJECT ...

As with loxicmd (cobra persistent flags), the global options may also come after the verb and
object (`pyloxi get lb -o wide`); RootGroup moves them to the front before click parses.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

import pyloxi
from pyloxi.cli import conntrack as _conntrack  # noqa: F401  (registers get ct)
from pyloxi.cli import lb as _lb  # noqa: F401  (registers create/get/delete lb)
from pyloxi.cli import render
from pyloxi.cli.client import client_for, make_settings, reporting
from pyloxi.cli.groups import create_app, delete_app, get_app

# Modules other verbs live in, loaded when present (they register on the groups).
OPTIONAL_COMMAND_MODULES = ("pyloxi.cli.endpoint",)

# Global options taking a value, and their spellings.
_GLOBAL_SHORT = ("-s", "-p", "-o", "-t")
_GLOBAL_LONG = ("--apiserver", "--port", "--output", "--timeout", "--protocol")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options (and their values) found anywhere to the front, order kept."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg in _GLOBAL_SHORT or arg in _GLOBAL_LONG:
            front += args[i : i + 2]
            i += 2
            continue
        if arg.startswith("--") and arg.split("=", 1)[0] in _GLOBAL_LONG and "=" in arg:
            front.append(arg)
        elif len(arg) > 2 and arg[:2] in _GLOBAL_SHORT and not arg.startswith("--"):
            front.append(arg)  # -ojson, -p11111
        else:
            rest.append(arg)
        i += 1
    return front + rest


# typer vendors click; reach its exception classes through a public one.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class RootGroup(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Usage errors as one line on stderr (exit 2), like every other input error."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # help was printed already
                sys.exit(exc.exit_code)
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"Error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        except _ClickException as exc:
            typer.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        except ValidationError as exc:  # a value the wire model refuses (length, Unicode)
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "value"
            typer.echo(f"Error: invalid {where}: {first['msg']}", err=True)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=RootGroup,
    name="pyloxi",
    help="pyloxi: loxilb-compatible L4 load balancer (CLI for its REST API).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    apiserver: Annotated[
        str | None,
        typer.Option("-s", "--apiserver", help="API server address  [default: 127.0.0.1]"),
    ] = None,
    port: Annotated[
        int | None, typer.Option("-p", "--port", help="API server port  [default: 11111]")
    ] = None,
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="output format: wide | json")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("-t", "--timeout", help="request timeout, s  [default: 10]")
    ] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="http | https  [default: http]")
    ] = None,
) -> None:
    """Global options may also be given after the command. Env PYLOXI_API=host[:port] or URL."""
    with reporting():
        ctx.obj = make_settings(apiserver, port, output, timeout, protocol)


@app.command("version")
def version(
    ctx: typer.Context,
    client_only: Annotated[
        bool, typer.Option("--client", help="only this CLI's version, do not ask the server")
    ] = False,
) -> None:
    """Show the CLI version and the version of the API server."""
    settings = ctx.find_root().obj
    server: Any = None
    if not client_only:
        with reporting(), client_for(ctx) as client:
            server = client.get("/version")
    if settings.json:
        render.print_json({"client": pyloxi.__version__, "server": server})
        return
    typer.echo(f"pyloxi CLI: {pyloxi.__version__}")
    if isinstance(server, dict):
        info = f" ({server['buildInfo']})" if server.get("buildInfo") else ""
        typer.echo(f"API server: {server.get('version', '?')}{info}")


def _load_optional_commands() -> None:
    for name in OPTIONAL_COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


_load_optional_commands()
app.add_typer(create_app, name="create")
app.add_typer(get_app, name="get")
app.add_typer(delete_app, name="delete")
