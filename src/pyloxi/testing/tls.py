"""A throw-away CA and a server certificate signed by it, made with the openssl command.

    certs = make_certs(tmp_dir, ips=["10.0.0.1"])
    # certs.ca (give to clients), certs.cert + certs.key (give to the server)

The server certificate names 127.0.0.1, ::1, localhost and the given addresses, so clients can
check the name as they would in production (no `verify=False` anywhere).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    ca: str
    cert: str
    key: str


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {proc.stderr.strip()}")


def make_certs(directory: str | Path, ips: Sequence[str] = ()) -> Certs:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (str(d / n) for n in
                                  ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
             "-subj", "/CN=pyloxi test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=pyloxi API")
    names = ["DNS:localhost", "IP:127.0.0.1", "IP:::1", *(f"IP:{ip}" for ip in ips)]
    ext = d / "server.ext"
    ext.write_text(f"subjectAltName={','.join(names)}\n"
                   "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", str(ext))
    Path(key).chmod(0o600)
    return Certs(ca=ca, cert=cert, key=key)
