"""The `pyloxi` command: CLI verbs, plus the long-running `daemon` and `kube-agent` modes.

This sits above every package (like daemon.py) so the CLI never imports the daemon.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "daemon":
        from pyloxi.daemon import main as daemon_main

        return daemon_main(args[1:])
    if args and args[0] == "kube-agent":
        from pyloxi.k8s.agent import main as agent_main

        return agent_main(args[1:])
    from pyloxi.cli.main import app

    app(args=args, prog_name="pyloxi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
