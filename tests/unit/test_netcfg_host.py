"""pyloxi.host.netcfg without a kernel: a netlink refusal becomes loxilb's error, its status
chosen from the kernel's reason as loxilb's substring rules would (handler/common.go)."""

from __future__ import annotations

import errno

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from pyloxi.host.netcfg import kernel_error


@pytest.mark.parametrize("code, status, reason", [
    (errno.EEXIST, 409, "file exists"),
    (errno.ESRCH, 404, "no such process"),
    (errno.ENODEV, 404, "no such device"),
    (errno.ENOENT, 404, "no such file or directory"),
    (errno.EINVAL, 400, "invalid argument"),
    (errno.ENETUNREACH, 400, "network is unreachable"),
    (errno.EOPNOTSUPP, 500, "operation not supported"),
    (errno.EPERM, 500, "operation not permitted"),
])
def test_kernel_reason_and_status(code: int, status: int, reason: str) -> None:
    err = kernel_error("route 10.0.0.0/8 via 10.1.1.1", NetlinkError(code))
    assert err.code == status
    assert err.message == f"route 10.0.0.0/8 via 10.1.1.1: {reason}"
