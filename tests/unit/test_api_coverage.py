"""docs/api.md's table of loxilb operations is generated (scripts/api_coverage.py), up to date,
and every loxilb operation pyloxi does not serve has a reason."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def coverage_module() -> ModuleType:
    """scripts/api_coverage.py (not a package), imported once."""
    if "api_coverage" in sys.modules:
        return sys.modules["api_coverage"]
    spec = importlib.util.spec_from_file_location("api_coverage",
                                                  ROOT / "scripts" / "api_coverage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["api_coverage"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


coverage = coverage_module()


def test_the_coverage_table_in_docs_api_md_is_up_to_date(
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("schemathesis")  # the app is the fuzz test's
    rc = coverage.main(["--check"])
    assert rc == 0, capsys.readouterr().err
    doc = (ROOT / "docs" / "api.md").read_text()
    assert doc.count(coverage.BEGIN) == 1 and doc.count(coverage.END) == 1


def _openapi(*ops: tuple[str, str]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path in ops:
        paths.setdefault(f"/netlox/v1{path}", {})[method.lower()] = {}
    return {"paths": paths}


SWAGGER = {"paths": {
    "/config/a/{name}": {"get": {}, "delete": {}},
    "/config/export": {"get": {}},
    "/config/bgp/policy/apply": {"post": {}},
}}


@pytest.fixture
def unserved(monkeypatch: pytest.MonkeyPatch) -> None:
    """An operation with a reason not to be served, whatever the real table holds today."""
    monkeypatch.setattr(coverage, "NOT_SERVED", {("POST", "/config/bgp/policy/apply"): "why"})


def test_served_operations_match_by_method_and_path_shape(unserved: None) -> None:
    cov = coverage.coverage(SWAGGER, _openapi(
        ("GET", "/config/a/{other_name}"), ("DELETE", "/config/a/{x}"), ("GET", "/config/export"),
        ("GET", "/extra")))
    status = {r.op: r.status for r in cov.rows}
    assert status[("GET", "/config/a/{name}")] == "served"
    assert status[("DELETE", "/config/a/{name}")] == "served"
    assert status[("GET", "/config/export")] in ("served", "differs")  # real DIVERGENCES
    assert status[("POST", "/config/bgp/policy/apply")] == "not served"
    assert cov.pyloxi_only == [("GET", "/extra")]
    # the tables name operations this small swagger does not have: only those errors
    assert all("does not list" in e for e in cov.errors), cov.errors


def test_an_unserved_operation_without_a_reason_is_an_error() -> None:
    cov = coverage.coverage(SWAGGER, _openapi(("GET", "/config/a/{name}")))
    assert ("DELETE", "/config/a/{name}") in {r.op for r in cov.rows if r.status == "MISSING"}
    assert any(e.startswith("DELETE /config/a/{name} is not served") for e in cov.errors)


def test_a_served_operation_left_in_the_tables_is_an_error(unserved: None) -> None:
    cov = coverage.coverage(SWAGGER, _openapi(
        ("GET", "/config/a/{name}"), ("DELETE", "/config/a/{name}"),
        ("GET", "/config/export"), ("POST", "/config/bgp/policy/apply")))
    assert "POST /config/bgp/policy/apply is served: remove it from NOT_SERVED" in cov.errors


def test_the_section_is_replaced_in_place_or_appended() -> None:
    section = f"{coverage.BEGIN}\nnew\n{coverage.END}\n"
    assert coverage.updated("# doc\n", section) == f"# doc\n\n{section}"
    old = f"# doc\n\n{coverage.BEGIN}\nold\n{coverage.END}\n"
    assert coverage.updated(old, section) == f"# doc\n\n{section}"


def test_the_divergences_patch_loxilbs_schema_to_what_loxilb_answers() -> None:
    patched = coverage.conformance_swagger()
    lb = patched["definitions"]["LoadbalanceEntry"]["properties"]
    assert lb["secondaryIPs"].get("x-nullable") is True
    assert "x-nullable" not in coverage.load_swagger()["definitions"]["LoadbalanceEntry"][
        "properties"]["secondaryIPs"]
