"""The verb groups. Object modules register their commands on these:

    from pyloxi.cli.groups import create_app, get_app, delete_app

    @create_app.command("endpoint")
    def create_endpoint(ctx: typer.Context, ...): ...

and cli/main.py mounts the groups as `pyloxi create|get|delete ...`.
"""

from __future__ import annotations

import typer

create_app = typer.Typer(help="Create an object (lb, ...).", no_args_is_help=True)
get_app = typer.Typer(help="Show objects (lb, ct, ...).", no_args_is_help=True)
delete_app = typer.Typer(help="Delete an object (lb, ...).", no_args_is_help=True)
set_app = typer.Typer(help="Set a value (log-level, login, logout, refresh).", no_args_is_help=True)
