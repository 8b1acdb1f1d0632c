"""The `pyloxi` command: CLI verbs, plus the long-running `daemon` and `kube-agent` modes.

This sits above every package (like daemon.py) so the CLI never imports the daemon. The modes
are commands of the CLI's typer app that hand every argument after their name to their own
parser (argparse), `--help` included.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from pyloxi.cli.main import app

MODE_SETTINGS: dict[str, Any] = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "help_option_names": [],  # `pyloxi daemon --help` is the daemon's own help
}


@app.command("daemon", context_settings=MODE_SETTINGS, add_help_option=False,
             rich_help_panel="Modes")
def daemon(ctx: typer.Context) -> None:
    """Run the load balancer: eBPF datapath, REST API, probes (pyloxi daemon --help)."""
    # imported when run: the CLI verbs need neither uvicorn nor the datapath
    from pyloxi.daemon import main as daemon_main

    raise typer.Exit(daemon_main(ctx.args))


@app.command("kube-agent", context_settings=MODE_SETTINGS, add_help_option=False,
             rich_help_panel="Modes")
def kube_agent(ctx: typer.Context) -> None:
    """Serve Kubernetes Services of type LoadBalancer (pyloxi kube-agent --help)."""
    from pyloxi.k8s.agent import main as agent_main

    raise typer.Exit(agent_main(ctx.args))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    app(args=args, prog_name="pyloxi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
