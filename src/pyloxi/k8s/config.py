"""Agent configuration: kube-loxilb-style flags plus an optional YAML file (flags win).

The YAML keys are kube-loxilb's config-file keys (`loxiURL`, `cidrPools`, `setExclIPAM`,
`setLBMode`, `zone`, `loxilbLoadBalancerClass`, `clientConnection.kubeconfig`, ...) plus pyloxi's
own (`resyncPeriod`, `acceptNoClass`, ...). Unknown keys are an error, as in kube-loxilb's strict
unmarshal.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from pyloxi.client.tokens import read_token_file

DEFAULT_CLASS = "loxilb.io/loxilb"
DEFAULT_POOL = "defaultPool"
DEFAULT_CIDR4 = "123.123.123.1/24"
DEFAULT_CIDR6 = "3ffe:cafe::1/96"
MAX_ASN = 4294967295


class ConfigError(ValueError):
    """The flags or the config file are not usable."""


@dataclass
class AgentConfig:
    loxi_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:11111"])
    cidr_pools: str = f"{DEFAULT_POOL}={DEFAULT_CIDR4}"
    cidr6_pools: str = f"{DEFAULT_POOL}={DEFAULT_CIDR6}"
    unique_ip: bool = False  # --setUniqueIP / setExclIPAM
    lb_mode: int = 0  # --setLBMode
    zone: str = "llb"
    lb_class: str = DEFAULT_CLASS  # loxilbLoadBalancerClass
    accept_no_class: bool = False  # also serve LoadBalancer Services without a class
    use_pod_network: bool = False
    monitor: bool = False
    zone_name_status: bool = False  # status as kube-loxilb's `hostname: <zone>-<ip>`
    kubeconfig: str = ""  # empty => in-cluster config
    resync_period: float = 60.0  # seconds
    loxi_timeout: float = 5.0  # seconds per REST call to a pyloxi instance
    # pyloxi's secured API (`pyloxi daemon --token-file`, `--tls`): the bearer token's file and
    # the CA that signed the daemons' certificates (pyloxi's own keys; kube-loxilb has none)
    loxi_token_file: str = ""
    loxi_ca_cert: str = ""
    watch_timeout: int = 300  # timeoutSeconds of one watch request
    log_level: str = "info"
    # kube-loxilb's cluster roles: the instance VIP sent with cistate ("" = no role election)
    set_roles: str = ""
    set_bgp: int = 0  # local AS of every pyloxi instance's BGP (0 = no BGP)
    ext_bgp_peers: str = ""  # "ip:asn,ip:asn": BGP neighbours of every instance


# (flag, config-file key, attribute, kind)
_OPTIONS: list[tuple[str, str, str, str]] = [
    ("--loxiURL", "loxiURL", "loxi_urls", "urls"),
    ("--cidrPools", "cidrPools", "cidr_pools", "str"),
    ("--cidr6Pools", "cidr6Pools", "cidr6_pools", "str"),
    ("--externalCIDR", "externalCIDR", "", "external"),
    ("--setUniqueIP", "setExclIPAM", "unique_ip", "bool"),
    ("--setLBMode", "setLBMode", "lb_mode", "int"),
    ("--zone", "zone", "zone", "str"),
    ("--loadBalancerClass", "loxilbLoadBalancerClass", "lb_class", "str"),
    ("--acceptNoClass", "acceptNoClass", "accept_no_class", "bool"),
    ("--usePodNetwork", "usePodNetwork", "use_pod_network", "bool"),
    ("--monitor", "monitor", "monitor", "bool"),
    ("--zoneNameStatus", "zoneNameStatus", "zone_name_status", "bool"),
    ("--noZoneName", "noZoneName", "", "nozone"),
    ("--kubeconfig", "kubeconfig", "kubeconfig", "str"),
    ("--resyncPeriod", "resyncPeriod", "resync_period", "float"),
    ("--loxiTimeout", "loxiTimeout", "loxi_timeout", "float"),
    ("--loxiTokenFile", "loxiTokenFile", "loxi_token_file", "str"),
    ("--loxiCACert", "loxiCACert", "loxi_ca_cert", "str"),
    ("--logLevel", "logLevel", "log_level", "str"),
    ("--setRoles", "setRoles", "set_roles", "str"),
    ("--setBGP", "setBGP", "set_bgp", "int"),
    ("--extBGPPeers", "extBGPPeers", "ext_bgp_peers", "str"),
]


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"not a boolean: {value!r}")


def _urls(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    urls = [str(u).strip().rstrip("/") for u in items if str(u).strip()]
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ConfigError(f"loxiURL {u!r} must start with http:// or https://")
    return urls


def _apply(cfg: AgentConfig, key: str, attr: str, kind: str, value: Any) -> None:
    try:
        if kind == "urls":
            cfg.loxi_urls = _urls(value)
        elif kind == "external":
            cfg.cidr_pools = f"{DEFAULT_POOL}={value}"
        elif kind == "nozone":
            if _bool(value):
                cfg.zone_name_status = False
        elif kind == "bool":
            setattr(cfg, attr, _bool(value))
        elif kind == "int":
            setattr(cfg, attr, int(value))
        elif kind == "float":
            setattr(cfg, attr, float(value))
        elif isinstance(value, list):  # cidrPools may be a YAML list
            setattr(cfg, attr, ",".join(str(v) for v in value))
        else:
            setattr(cfg, attr, str(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {exc}") from None


def load_file(cfg: AgentConfig, path: str) -> None:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    by_key = {key: (attr, kind) for _, key, attr, kind in _OPTIONS}
    for key, value in data.items():
        if key == "clientConnection":
            if not isinstance(value, dict):
                raise ConfigError("clientConnection must be a mapping")
            if value.get("kubeconfig"):
                cfg.kubeconfig = str(value["kubeconfig"])
            continue
        if key not in by_key:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        attr, kind = by_key[key]
        _apply(cfg, key, attr, kind, value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyloxi kube-agent",
        description="Serve Kubernetes Services of type LoadBalancer with pyloxi instances.",
    )
    p.add_argument("--config", help="YAML config file (kube-loxilb keys); flags override it")
    for flag, key, _attr, kind in _OPTIONS:
        if kind in ("bool", "nozone"):
            p.add_argument(flag, dest=key, nargs="?", const="true", default=None,
                           help=f"config key {key}")
        else:
            p.add_argument(flag, dest=key, default=None, help=f"config key {key}")
    return p


def parse_args(argv: list[str]) -> AgentConfig:
    args = build_parser().parse_args(argv)
    cfg = AgentConfig()
    if args.config:
        load_file(cfg, args.config)
    for _flag, key, attr, kind in _OPTIONS:
        value = getattr(args, key)
        if value is not None:
            _apply(cfg, key, attr, kind, value)
    validate(cfg)
    return cfg


def validate(cfg: AgentConfig) -> None:
    if not cfg.loxi_urls:
        raise ConfigError("at least one --loxiURL is needed (in-cluster discovery is not built)")
    if not 0 <= cfg.lb_mode <= 5:
        raise ConfigError(f"setLBMode {cfg.lb_mode} out of range 0..5")
    if "/" not in cfg.lb_class:
        raise ConfigError(f"loxilbLoadBalancerClass {cfg.lb_class!r} must contain '/'")
    if cfg.resync_period <= 0:
        raise ConfigError("resyncPeriod must be > 0")
    parse_pools(cfg.cidr_pools, 4)
    parse_pools(cfg.cidr6_pools, 6)
    if cfg.set_roles:
        try:
            cfg.set_roles = str(ipaddress.ip_address(cfg.set_roles.strip()))
        except ValueError:
            raise ConfigError(f"setRoles {cfg.set_roles!r}: not an IP address (the instance "
                              "VIP, e.g. 0.0.0.0)") from None
    if not 0 <= cfg.set_bgp <= MAX_ASN:
        raise ConfigError(f"setBGP {cfg.set_bgp} out of range 0..{MAX_ASN}")
    peers = parse_peers(cfg.ext_bgp_peers)
    if peers and not cfg.set_bgp:
        raise ConfigError("extBGPPeers needs setBGP (the local AS)")
    if cfg.loxi_token_file:
        loxi_token(cfg)  # readable and holding a token, or the agent does not start
    if cfg.loxi_ca_cert and not os.access(cfg.loxi_ca_cert, os.R_OK):
        raise ConfigError(f"loxiCACert {cfg.loxi_ca_cert!r} cannot be read")


def loxi_token(cfg: AgentConfig) -> str | None:
    """The bearer token for pyloxi's API, read from loxiTokenFile (None: no token)."""
    if not cfg.loxi_token_file:
        return None
    try:
        return read_token_file(cfg.loxi_token_file, "loxiTokenFile")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_peers(spec: str) -> list[tuple[str, int]]:
    """extBGPPeers `ip:asn[,ip:asn]` (IPv6: the last ':' separates the AS) → [(ip, asn)]."""
    peers: list[tuple[str, int]] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        host, sep, asn = item.rpartition(":")
        try:
            if not sep:
                raise ValueError("expected ip:asn")
            ip = str(ipaddress.ip_address(host.strip("[]")))
            n = int(asn)
            if not 1 <= n <= MAX_ASN:
                raise ValueError(f"AS {n} out of range 1..{MAX_ASN}")
        except ValueError as exc:
            raise ConfigError(f"extBGPPeers {item!r}: {exc}") from None
        peers.append((ip, n))
    return peers


def parse_pools(spec: str, family: int) -> dict[str, list[tuple[int, int]]]:
    """`name=CIDR|a-b[,name=...]` (a name may repeat to add ranges) → name → [(first, last)]."""
    pools: dict[str, list[tuple[int, int]]] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"pool {item!r}: expected name=CIDR or name=first-last")
        pools.setdefault(name.strip(), []).append(parse_range(value.strip(), family))
    return pools


def parse_range(value: str, family: int) -> tuple[int, int]:
    try:
        if "-" in value and "/" not in value:
            a, b = (ipaddress.ip_address(x.strip()) for x in value.split("-", 1))
            if a.version != family or b.version != family or int(b) < int(a):
                raise ValueError("bad range")
            return int(a), int(b)
        iface = ipaddress.ip_interface(value)
        if iface.version != family:
            raise ValueError(f"not IPv{family}")
        net = iface.network
        first, last = int(net.network_address), int(net.broadcast_address)
        if int(iface.ip) != first:
            # kube-loxilb habit: host bits in the CIDR are where allocation starts
            first = int(iface.ip)
        elif net.prefixlen < (31 if family == 4 else 127):
            first += 1  # skip the network (v6: subnet-router anycast) address
        if family == 4 and net.prefixlen < 31:
            last -= 1  # skip the broadcast address
        return first, last
    except ValueError as exc:
        raise ConfigError(f"pool range {value!r}: {exc}") from None


def as_dict(cfg: AgentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
