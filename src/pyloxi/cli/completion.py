"""`pyloxi completion bash|zsh|fish|powershell` (loxicmd's `completion`): the shell script that
completes pyloxi's verbs, objects and flags. Load it with, e.g.,

    source <(pyloxi completion bash)
    pyloxi completion fish > ~/.config/fish/completions/pyloxi.fish

The script asks `pyloxi` itself for candidates (env _PYLOXI_COMPLETE), so it always knows
the installed version's commands.
"""

from __future__ import annotations

from typing import Annotated

import typer

# typer's own modules: they are what its --show-completion uses, not re-exported publicly
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script

from pyloxi.cli.client import fail

SHELLS = ("bash", "zsh", "fish", "powershell")
PROG = "pyloxi"
COMPLETE_VAR = "_PYLOXI_COMPLETE"

# typer's shell classes (its scripts' protocol): registered at import, so `pyloxi` answers the
# script's requests although the app is built without typer's --install-completion options
completion_init()


def completion(
    shell: Annotated[str, typer.Argument(help="bash | zsh | fish | powershell",
                                         metavar="SHELL")],
) -> None:
    """Print the completion script for a shell."""
    if shell not in SHELLS:
        fail(f"invalid shell {shell!r}: one of {', '.join(SHELLS)}", 2)
    typer.echo(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell))
