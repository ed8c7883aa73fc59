"""deploy/kubernetes: the kustomizations are complete and the manifests agree with the gateway."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.app import create_app
from gateway.config import load_settings
from tests.support.processes import ROOT
from tests.support.settings import settings_read

K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SECRET_TEMPLATE = K8S / "secret.example.yaml"

Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(folder: Path) -> Doc:
    return documents(folder / "kustomization.yaml")[0]


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge as far as these patches need it: maps merge, anything else replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in patch.items()}}
    return patch


def build(folder: Path) -> list[Doc]:
    """The manifests a kustomization yields: its resources, recursively, with its patches."""
    spec = kustomization(folder)
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        target = folder / entry
        docs += build(target) if target.is_dir() else documents(target)
    for patch in spec.get("patches", []):
        for change in documents(folder / patch["path"]):
            (index,) = [
                i
                for i, doc in enumerate(docs)
                if (doc["kind"], doc["metadata"]["name"])
                == (change["kind"], change["metadata"]["name"])
            ]
            docs[index] = merge(docs[index], change)
    return docs


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    (found,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def gateway_parts(docs: list[Doc]) -> tuple[Doc, Doc, Doc]:
    """The gateway's Deployment, its container and the ConfigMap it reads."""
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and any(c["name"] == "gateway" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (name,) = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
    return deployment, container, one(docs, "ConfigMap", name)


def served_paths() -> set[str]:
    """Paths of the routes the gateway's route table adds."""
    app = create_app(load_settings({}))
    return {route.resource.canonical for route in app.router.routes() if route.resource}


def port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def prestop_seconds(container: Doc) -> float:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep") and len(command) == 2, command
    return float(command[1])


def manifest_files() -> set[Path]:
    return {p for p in K8S.rglob("*.y*ml") if p.name != "kustomization.yaml"}


def test_every_kustomization_lists_existing_files_and_every_manifest_is_listed():
    listed: set[Path] = set()
    folders = [p.parent for p in K8S.rglob("kustomization.yaml")]
    assert K8S / "base" in folders and OVERLAYS, folders
    for folder in folders:
        spec = kustomization(folder)
        entries = spec.get("resources", []) + [p["path"] for p in spec.get("patches", [])]
        for entry in entries:
            target = (folder / entry).resolve()
            assert target.exists(), f"{folder.name}/kustomization.yaml lists missing {entry}"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), target
            else:
                listed.add(target)
    # The Secret template alone stays out, so that applying never overwrites real keys.
    assert manifest_files() - listed == {SECRET_TEMPLATE}
    for path in manifest_files():
        assert documents(path), f"{path} holds no manifest"


def test_probes_point_at_routes_the_gateway_serves():
    served = served_paths()
    assert {"/healthz", "/readyz"} <= served, served
    for overlay in OVERLAYS:
        _, container, _ = gateway_parts(build(overlay))
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_ports_agree_from_the_configmap_to_the_service(overlay):
    docs = build(overlay)
    deployment, container, config = gateway_parts(docs)
    (container_port,) = [p["containerPort"] for p in container["ports"]]
    assert container_port == int(config["data"]["PORT"])
    service = one(docs, "Service", deployment["metadata"]["name"])
    for port in service["spec"]["ports"]:
        assert port_number(container, port["targetPort"]) == container_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert port_number(container, container[probe]["httpGet"]["port"]) == container_port


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_pod_outlasts_the_prestop_pause_and_the_shutdown_grace(overlay):
    deployment, container, config = gateway_parts(build(overlay))
    grace = load_settings(config["data"]).shutdown_grace
    pod = deployment["spec"]["template"]["spec"]
    pause = prestop_seconds(container)
    assert pause > 0, "without a pause, requests routed during endpoint removal are refused"
    assert pod["terminationGracePeriodSeconds"] >= pause + grace + 5


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_replicas_covers_every_pod_the_autoscaler_may_start(overlay):
    """While Redis is down each pod admits limit / REPLICAS alone: REPLICAS must be at least the
    most pods that can run, or an outage multiplies a client's limit."""
    docs = build(overlay)
    _, _, config = gateway_parts(docs)
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert load_settings(config["data"]).replicas >= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_variable_is_a_setting_the_gateway_reads_and_valid(overlay):
    settings = settings_read()
    docs = build(overlay)
    _, container, config = gateway_parts(docs)
    assert set(config["data"]) <= settings, set(config["data"]) - settings
    assert {e["name"] for e in container.get("env", [])} <= settings
    load_settings(config["data"])


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_selectors_match_the_gateway_pods_only(overlay):
    docs = build(overlay)
    deployment, _, _ = gateway_parts(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    name = deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the count"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) == (
        "Deployment",
        name,
    )
    assert hpa["spec"]["minReplicas"] >= 2
    service = one(docs, "Service", name)
    assert service["spec"]["selector"].items() <= labels.items()
    others = [d for d in docs if d["kind"] == "Deployment" and d is not deployment]
    for other in others:
        pod_labels = other["spec"]["template"]["metadata"]["labels"]
        for selector in (service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
            assert not selector.items() <= pod_labels.items(), f"selects {other['metadata']}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_gateway_runs_unprivileged_with_bounded_resources(overlay):
    deployment, container, _ = gateway_parts(build(overlay))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_redis_url_names_a_service_of_the_overlay_or_an_outside_redis(overlay):
    docs = build(overlay)
    _, _, config = gateway_parts(docs)
    url = urlsplit(config["data"]["REDIS_URL"])
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    if url.hostname in services:
        ports = [p["port"] for p in services[url.hostname]["spec"]["ports"]]
        assert (url.port or 6379) in ports
    else:
        # An overlay with its own Redis must not also ship the throwaway one.
        assert not [d for d in docs if d["metadata"]["name"].endswith("-redis")]


def test_the_secret_is_a_template_the_deployment_reads_and_holds_no_key():
    settings = settings_read()
    (secret,) = documents(SECRET_TEMPLATE)
    assert secret["kind"] == "Secret" and "data" not in secret
    assert set(secret["stringData"]) <= settings
    assert "API_KEY" in secret["stringData"]
    assert all(value == "" for value in secret["stringData"].values())
    for overlay in OVERLAYS:
        docs = build(overlay)
        assert not [d for d in docs if d["kind"] == "Secret"], "keys are never applied from git"
        _, container, _ = gateway_parts(docs)
        refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        assert refs == [secret["metadata"]["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kubectl_kustomize_builds_what_the_test_reads(overlay):
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl on this machine; the checks above read the same files")
    done = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    built = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    names = sorted((d["kind"], d["metadata"]["name"]) for d in built)
    assert names == sorted((d["kind"], d["metadata"]["name"]) for d in build(overlay))
    _, _, config = gateway_parts(built)
    assert config["data"] == gateway_parts(build(overlay))[2]["data"]
