"""The `pyloxi` command line: loxicmd-compatible verbs over the REST API.

    pyloxi [-s SERVER] [-p PORT] [-o wide|json] [-t SECONDS] VERB OBJECT ...

As with loxicmd (cobra persistent flags), the global options may also come after the verb and
object (`pyloxi get lb -o wide`); RootGroup moves them to the front before click parses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

import pyloxi
from pyloxi.cli import bfd as _bfd  # noqa: F401  (registers create/get/set/delete bfd)
from pyloxi.cli import bgp as _bgp  # noqa: F401  (registers create/get/delete bgpneighbor)
from pyloxi.cli import cluster as _cluster  # noqa: F401  (registers get cluster)
from pyloxi.cli import conntrack as _conntrack  # noqa: F401  (registers get ct)
from pyloxi.cli import endpoint as _endpoint  # noqa: F401  (registers create/get/delete ep)
from pyloxi.cli import firewall as _firewall  # noqa: F401  (registers create/get/delete fw)
from pyloxi.cli import ha as _ha  # noqa: F401  (registers get ha)
from pyloxi.cli import lb as _lb  # noqa: F401  (registers create/get/delete lb)
from pyloxi.cli import login as _login  # noqa: F401  (registers set login/logout/refresh)
from pyloxi.cli import mirror as _mirror  # noqa: F401  (registers create/get/delete mirror)
from pyloxi.cli import netcfg as _netcfg  # noqa: F401  (route, ip, neighbor, fdb, vlan, vxlan, port)
from pyloxi.cli import policy as _policy  # noqa: F401  (registers create/get/delete policy)
from pyloxi.cli import render
from pyloxi.cli import session as _session  # noqa: F401  (session, sessionulcl)
from pyloxi.cli import status as _status  # noqa: F401  (registers set/get log-level, process ...)
from pyloxi.cli.backup import apply, save
from pyloxi.cli.client import client_for, make_settings, reporting
from pyloxi.cli.completion import completion
from pyloxi.cli.groups import create_app, delete_app, get_app, set_app

# Global options taking a value, and their spellings.
_GLOBAL_SHORT = ("-s", "-p", "-o", "-t")
_GLOBAL_LONG = ("--apiserver", "--port", "--output", "--timeout", "--protocol", "--token-file",
                "--cacert")


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


# typer vendors click; reach its exception classes through a public one. Typed as that one,
# their subclass, for what they share with it: exit_code, format_message() and (UsageError) ctx.
_UsageError = cast(
    "type[typer.BadParameter]",
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"))
_ClickException = cast(
    "type[typer.BadParameter]",
    next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))


def _command_name(args: list[str]) -> str | None:
    """The first argument that is neither a global option nor its value."""
    i = 0
    while i < len(args):
        if args[i] in _GLOBAL_SHORT or args[i] in _GLOBAL_LONG:
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            return args[i]
    return None


class RootGroup(TyperGroup):
    def parses_own_args(self, name: str | None) -> bool:
        """Modes (`pyloxi daemon`) take every argument after their name as their own:
        `pyloxi daemon --port 11112` is the daemon's API port, not the CLI's."""
        command = self.commands.get(name or "")
        return bool(command is not None and command.context_settings.get("allow_extra_args"))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if self.parses_own_args(_command_name(list(args))):
            return super().parse_args(ctx, list(args))
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        """Usage errors as one line on stderr (exit 2), like every other input error."""
        def run() -> Any:
            return super(RootGroup, self).main(
                args, prog_name, complete_var, standalone_mode=False,
                windows_expand_args=windows_expand_args, **extra)

        if not standalone_mode:
            return run()
        try:
            rv = run()
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
    help="pyloxi: loxilb-compatible L4 load balancer: the daemon, its Kubernetes agent, and the "
    "CLI for its REST API.",
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
    token_file: Annotated[
        str | None, typer.Option("--token-file", help="file holding the API token "
                                 "(or env PYLOXI_TOKEN / PYLOXI_TOKEN_FILE)")
    ] = None,
    cacert: Annotated[
        str | None, typer.Option("--cacert", help="CA certificate to check the https API "
                                 "against (or env PYLOXI_CACERT)")
    ] = None,
) -> None:
    """Global options may also be given after the command. Env PYLOXI_API=host[:port] or URL."""
    if isinstance(ctx.command, RootGroup) and ctx.command.parses_own_args(ctx.invoked_subcommand):
        return  # a mode, not a client of the API
    with reporting():
        ctx.obj = make_settings(apiserver, port, output, timeout, protocol,
                                token_file=token_file, ca_file=cacert,
                                token_optional=ctx.invoked_subcommand == "set")


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


app.add_typer(create_app, name="create")
app.add_typer(get_app, name="get")
app.add_typer(delete_app, name="delete")
app.add_typer(set_app, name="set")
app.command("save")(save)
app.command("apply")(apply)
app.command("completion")(completion)
