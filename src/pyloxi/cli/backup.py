"""`pyloxi save` and `pyloxi apply` (loxicmd's cmd/dump/save.go and apply.go).

    pyloxi save -a | --ip | --lb | --firewall | --endpoint | --session | --ulcl | --bfd  [-c DIR]
    pyloxi apply --lb lbconfig.txt [--full] | --firewall FWconfig.txt | --endpoint EPconfig.txt
                 | --session F | --ulcl F | --bfd F | -f object.yaml
                 | --per-intf IF [-r] [-c /etc/loxilb/ipconfig/]

save writes what the API lists into loxilb's files under DIR (default /etc/loxilb/: the
files loxilb reads at its start), moving an older file to `<file>.bk`: lbconfig.txt,
FWconfig.txt, EPconfig.txt, sessionconfig.txt, sessionulclconfig.txt, BFDconfig.txt. A
component this server does not have (its list answers 404) is skipped with a warning.

apply re-POSTs a saved file entry by entry, as loxicmd does: for rules only externalIP,
protocol, port, sel, mode, BGP and the endpoints (`--full`: every saved field, as loxilb reads
lbconfig.txt at its start); firewall rules, sessions, ULCL filters, BFD sessions whole.
`--endpoint` (not in loxicmd, whose apply has no such option) re-POSTs EPconfig.txt.
`-f` takes Kubernetes-style YAML documents {apiVersion, kind, metadata, spec}.

`save --ip` writes ipconfig/<if>/ (type, mtu, ipv4addr, ipv4neigh, ipv4route) from the API's
listings of the daemon's interfaces (loxicmd reads the netlink of the host it runs on), the old
directory kept as ipconfig.bk; `apply --per-intf IF [-r]` makes that interface's addresses,
neighbours and static routes (-r: the routes only) through the API, where loxicmd runs `ip`.
Not done: `apply --ip FILE` (loxicmd runs each line of FILE as a shell command); bonds, VLAN
sub-interfaces, bridges, VXLAN and FDB entries in ipconfig/; the MTU is saved, not applied.
"""  # noqa: E501

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pyloxi.cli.client import Client, client_for, fail, reporting
from pyloxi.cli.parse import InputError
from pyloxi.client import ApiError, NotFound, Unreachable
from pyloxi.client.backup import (
    IPCONFIG_LISTS,
    SAVED,
    SAVED_BY_FLAG,
    BadConfigFile,
    Saved,
    apply_lb_full_body,
    ipconfig_files,
    per_intf_calls,
    yaml_call,
)
from pyloxi.client.calls import attr_list

DEFAULT_DIR = "/etc/loxilb/"
_LABELS = {"lb": "LB", "session": "Session", "ulcl": "UlCl", "firewall": "Firewall",
           "endpoint": "EndPoint", "bfd": "BFD"}
_NOT_DONE = ("apply --ip FILE runs each line of FILE as a shell command (loxicmd); pyloxi does "
             "not: use --per-intf IF for the files `pyloxi save --ip` writes")


def write_replacing(path: Path, text: str) -> None:
    """Write `path` whole (a reader never sees half a file); an older file becomes *.bk."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.replace(path, path.with_name(path.name + ".bk"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_one(api: Client, comp: Saved, directory: Path) -> Path | None:
    """Save one component; None if the server has no such component. Raises ApiError."""
    try:
        items = api.send(comp.list_call())
    except NotFound:
        return None
    path = directory / comp.file_name
    # Go's json.Marshal: compact
    write_replacing(path, json.dumps(comp.to_file(items), separators=(",", ":")))
    return path


def save_ip(api: Client, directory: Path) -> Path | None:
    """ipconfig/ from the API's listings; None if the server has no network configuration."""
    lists: dict[str, list[dict[str, Any]]] = {}
    for name, path, key in IPCONFIG_LISTS:
        try:
            lists[name] = attr_list(api.get(path), key)
        except NotFound:
            if name == "ports":
                return None
            lists[name] = []
    files = ipconfig_files(lists)
    target = directory / "ipconfig"
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".ipconfig."))
    try:
        for ifname, contents in files.items():
            (staging / ifname).mkdir()
            for fname, text in contents.items():
                (staging / ifname / fname).write_text(text, encoding="utf-8")
        backup = directory / "ipconfig.bk"
        if target.exists():
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def save(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("-a", "--all", help="save every component")] = False,
    ip: Annotated[bool, typer.Option("-i", "--ip", help="interfaces' addresses, neighbours, "
                                     "static routes: ipconfig/<if>/")] = False,
    lb: Annotated[bool, typer.Option("-l", "--lb", help="load-balancer rules: lbconfig.txt")
                  ] = False,
    session: Annotated[bool, typer.Option("--session", help="sessions: sessionconfig.txt")
                       ] = False,
    ulcl: Annotated[bool, typer.Option("--ulcl", help="ULCL filters: sessionulclconfig.txt")
                    ] = False,
    firewall: Annotated[bool, typer.Option("--firewall", help="firewall rules: FWconfig.txt")
                        ] = False,
    endpoint: Annotated[bool, typer.Option("--endpoint", help="endpoints: EPconfig.txt")
                        ] = False,
    bfd: Annotated[bool, typer.Option("--bfd", help="BFD sessions: BFDconfig.txt")] = False,
    config_path: Annotated[str, typer.Option("-c", "--config-path", help="directory")
                           ] = DEFAULT_DIR,
) -> None:
    """Save the current configuration in loxilb's files (old files kept as *.bk)."""
    chosen = {"ip": ip, "lb": lb, "session": session, "ulcl": ulcl, "firewall": firewall,
              "endpoint": endpoint, "bfd": bfd}
    picked = [f for f, on in chosen.items() if on] + (["all"] if all_ else [])
    if not picked:
        fail("give one of -a, --ip, --lb, --session, --ulcl, --firewall, --endpoint, --bfd "
             "(see 'pyloxi save --help')", 2)
    if len(picked) > 1:  # loxicmd: MarkFlagsMutuallyExclusive
        fail(f"--{picked[0]} and --{picked[1]} cannot be given together (one of -a, --ip, "
             "--lb, --session, --ulcl, --firewall, --endpoint, --bfd)", 2)
    directory = Path(config_path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the config directory {config_path}: {exc.strerror}", 1)
    failed = False
    with reporting(), client_for(ctx) as api:
        if ip or all_:
            try:
                where = save_ip(api, directory)
            except Unreachable:
                raise
            except (ApiError, OSError, ValueError) as exc:
                typer.echo(f"Error: IP configuration not saved: {exc}", err=True)
                failed = True
            else:
                if where is None:
                    typer.echo("Warning: IP configuration not saved: the server has no "
                               "/config/port/all", err=True)
                else:
                    typer.echo(f"IP Configuration saved in {where}")
        for comp in SAVED:
            if not (all_ or chosen[comp.flag]):
                continue
            label = _LABELS[comp.flag]
            try:
                path = save_one(api, comp, directory)
            except Unreachable:
                raise
            except ApiError as exc:
                typer.echo(f"Error: {label} configuration not saved: {exc.message}", err=True)
                failed = True
                continue
            except OSError as exc:
                typer.echo(f"Error: {label} configuration not saved: {exc}", err=True)
                failed = True
                continue
            if path is None:
                typer.echo(f"Warning: {label} configuration not saved: the server has no "
                           f"{comp.get_path}", err=True)
            else:
                typer.echo(f"{label} Configuration saved in {path}")
    if failed:
        raise typer.Exit(1)


def _read_saved(path: str, comp: Saved) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {{\"{comp.list_key}\": [...]}}")
    items = attr_list(data, comp.list_key)
    if not all(isinstance(i, dict) for i in items):
        raise InputError(f"{path}: {comp.list_key} must be a list of objects")
    return items


def apply_file(api: Client, comp: Saved, path: str, *, full: bool = False) -> int:
    """POST each entry of a saved file; stops at the first refusal (ApiError, with the
    entry's number in its message). Returns how many were posted."""
    items = _read_saved(path, comp)
    to_body = apply_lb_full_body if full and comp.flag == "lb" else comp.to_body
    for n, item in enumerate(items):
        try:
            api.post(comp.post_path, to_body(item))
        except ApiError as exc:
            exc.message = f"{path}: entry {n}: {exc.message}"
            raise
    return len(items)


def apply_yaml(api: Client, path: str) -> int:
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8"))
                if d is not None]
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    try:
        calls = [yaml_call(d) for d in docs]  # every document checked before any is sent
    except BadConfigFile as exc:
        raise InputError(f"{path}: {exc}") from None
    for call in calls:
        api.send(call)
    return len(calls)


def apply_per_intf(api: Client, directory: Path, ifname: str, *, routes_only: bool = False
                   ) -> list[str]:
    """Re-make one interface's saved addresses, neighbours and routes; the refusals (each entry
    is tried, as loxicmd runs every line)."""
    folder = directory / ifname
    if not (folder / "type").is_file():
        raise InputError(f"no saved configuration for {ifname} in {directory} (no {folder}/type)")
    files = {f.name: f.read_text(encoding="utf-8") for f in folder.iterdir() if f.is_file()}
    try:
        calls = per_intf_calls(ifname, files, routes_only=routes_only)
    except BadConfigFile as exc:
        raise InputError(str(exc)) from None
    errors = []
    for call in calls:
        try:
            api.send(call)
        except Unreachable:
            raise
        except ApiError as exc:
            errors.append(f"{ifname}: {call.path} {call.body}: {exc.message}")
    return errors


def apply(
    ctx: typer.Context,
    ip: Annotated[str, typer.Option("-i", "--ip", help="IP config file (not supported)")] = "",
    per_intf: Annotated[str, typer.Option("--per-intf", help="re-make this interface's saved "
                                          "addresses, neighbours and routes")] = "",
    ipv4route: Annotated[bool, typer.Option("-r", "--ipv4route",
                                            help="with --per-intf: its routes only")] = False,
    config_path: Annotated[str, typer.Option("-c", "--config-path",
                                             help="ipconfig directory for --per-intf")
                           ] = "/etc/loxilb/ipconfig/",
    lb: Annotated[str, typer.Option("-l", "--lb", help="lbconfig.txt to apply")] = "",
    full: Annotated[bool, typer.Option("--full", help="with --lb: every saved field, not "
                                       "only loxicmd's (ip, port, protocol, sel, mode, BGP, "
                                       "endpoints)")] = False,
    session: Annotated[str, typer.Option("--session", help="sessionconfig.txt")] = "",
    ulcl: Annotated[str, typer.Option("--ulcl", help="sessionulclconfig.txt")] = "",
    firewall: Annotated[str, typer.Option("--firewall", help="FWconfig.txt to apply")] = "",
    endpoint: Annotated[str, typer.Option("--endpoint", help="EPconfig.txt to apply")] = "",
    bfd: Annotated[str, typer.Option("--bfd", help="BFDconfig.txt to apply")] = "",
    file: Annotated[str, typer.Option("-f", "--file", help="Kubernetes-style YAML file")] = "",
) -> None:
    """Apply a saved configuration: re-POST its entries as loxicmd apply does."""
    files = {"lb": lb, "session": session, "ulcl": ulcl, "firewall": firewall,
             "endpoint": endpoint, "bfd": bfd}
    if not (ip or per_intf or file or any(files.values())):
        fail("give a file: --lb, --firewall, --endpoint, --session, --ulcl, --bfd or -f "
             "(see 'pyloxi apply --help')", 2)
    if ip:
        fail(_NOT_DONE, 2)
    if ipv4route and not per_intf:
        fail("-r/--ipv4route goes with --per-intf IF", 2)
    failed = False
    with reporting(), client_for(ctx) as api:
        if per_intf:
            errors = apply_per_intf(api, Path(config_path), per_intf, routes_only=ipv4route)
            for message in errors:
                typer.echo(f"Error: {message}", err=True)
            failed = bool(errors)
            what = "Route Configuration" if ipv4route else "Configuration"
            typer.echo(f"{what} applied for - {per_intf}")
            if ipv4route:  # loxicmd: -r applies the routes and nothing else
                raise typer.Exit(1 if failed else 0)
        # loxicmd's order: lb, session, ulcl, firewall, bfd, -f; endpoints after the rules
        # (a rule's own probes exist then, and a saved endpoint overrides them)
        for flag in ("lb", "endpoint", "session", "ulcl", "firewall", "bfd"):
            if not files[flag]:
                continue
            try:
                apply_file(api, SAVED_BY_FLAG[flag], files[flag], full=full)
            except Unreachable:
                raise
            except ApiError as exc:
                typer.echo(f"Error: {exc.message}", err=True)
                failed = True
                continue
            typer.echo(f"Configuration applied - {files[flag]}")
        if file:
            try:
                apply_yaml(api, file)
            except ApiError as exc:
                typer.echo(f"Error: {file}: {exc.message}", err=True)
                typer.echo(f"Configuration failed - {file}", err=True)
                failed = True
            else:
                typer.echo(f"Configuration applied - {file}")
    if failed:
        raise typer.Exit(1)


__all__ = ["SAVED", "apply", "save"]
