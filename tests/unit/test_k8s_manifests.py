"""deploy/kubernetes/: schema-valid manifests whose RBAC covers what the agent calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pyloxi.k8s.config import AgentConfig, load_file, validate

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
K8S_VERSION = "1.30"


def docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def test_every_manifest_is_valid_against_the_kubernetes_schema():
    found = docs()
    kinds = {d["kind"] for _, d in found}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
            "ConfigMap"} <= kinds
    for name, doc in found:
        kv.validate(doc, K8S_VERSION, strict=True)  # raises with the failing path
        assert doc["metadata"]["name"], name


def test_schema_validation_catches_mistakes():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "x"}, "spec": {"replicas": "one"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def _allowed(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", [])
               and (verb in r.get("verbs", []) or "*" in r.get("verbs", [])) for r in rules)


def test_rbac_covers_the_agent_calls():
    role = next(d for _, d in docs() if d["kind"] == "ClusterRole")
    rules = role["rules"]
    for group, resource, verbs in [
        ("", "services", ("list", "watch", "get")),
        ("", "services/status", ("update",)),
        ("", "nodes", ("list", "watch")),
        ("discovery.k8s.io", "endpointslices", ("list", "watch")),
        ("", "events", ("create",)),
    ]:
        for verb in verbs:
            assert _allowed(rules, group, resource, verb), (group, resource, verb)
    binding = next(d for _, d in docs() if d["kind"] == "ClusterRoleBinding")
    sa = next(d for _, d in docs() if d["kind"] == "ServiceAccount")
    dep = next(d for _, d in docs() if d["kind"] == "Deployment")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_configmap_config_is_accepted_by_the_agent(tmp_path):
    cm = next(d for _, d in docs() if d["kind"] == "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    cfg = AgentConfig()
    load_file(cfg, str(path))
    validate(cfg)
    assert cfg.loxi_urls and cfg.cidr_pools.startswith("defaultPool=")
    dep = next(d for _, d in docs() if d["kind"] == "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["pyloxi", "kube-agent"]
    mount = container["volumeMounts"][0]["mountPath"]
    assert any(a == f"--config={mount}/config.yaml" for a in container["args"])
