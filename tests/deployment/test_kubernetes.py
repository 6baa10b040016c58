"""The Kubernetes base (deploy/kubernetes/), validated offline.

Each manifest is checked against the Kubernetes API's own schemas (kubernetes-validate
ships them, so nothing is fetched), then held to the app it runs: the commands are
`make run`'s, the probes are real routes of the API, the ports are the ones the settings
bind, the grace periods outlast gunicorn's graceful timeout and Celery's hard time
limit as computed from the same settings, and exactly one beat runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import fakeredis
import kubernetes_validate
import pytest
import yaml

from api import create_app
from predictions.settings import Settings
from tests.deployment.files import ROOT, SECRET_PATTERNS, make_run_commands
from worker.celery_app import create_celery

BASE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release still supported upstream when this was written; the
# manifests use nothing newer, and strict validation refuses unknown fields.
KUBERNETES_VERSION = "1.32.0"
COMPONENTS = ("api", "worker", "beat")


def load_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
    return documents


RESOURCES = load_resources()


def find(kind: str, component: str | None = None) -> dict[str, Any]:
    for resource in RESOURCES:
        labels = resource["metadata"].get("labels", {})
        if resource["kind"] == kind and (
            component is None or labels.get("app.kubernetes.io/component") == component
        ):
            return resource
    raise AssertionError(f"no {kind} for {component}")


def container(component: str) -> dict[str, Any]:
    containers = find("Deployment", component)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def environment(component: str) -> dict[str, str]:
    """The environment the component's container gets: ConfigMap, Secret, then env."""
    env: dict[str, str] = {}
    for source in container(component).get("envFrom", []):
        if "configMapRef" in source:
            env.update(find("ConfigMap")["data"])
        if "secretRef" in source:
            env.update(find("Secret")["stringData"])
    env.update({item["name"]: item["value"] for item in container(component).get("env", [])})
    return env


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize(
    "resource", RESOURCES, ids=[f"{r['kind']}/{r['metadata']['name']}" for r in RESOURCES]
)
def test_every_manifest_is_valid_kubernetes(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("component", COMPONENTS)
def test_commands_are_those_of_make_run(component: str) -> None:
    assert container(component)["command"] == make_run_commands()[component]


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_setting_is_a_real_one(component: str) -> None:
    fields = {field.upper() for field in Settings.__dataclass_fields__}
    assert set(environment(component)) <= fields
    Settings.from_env(environment(component))  # and every value is accepted


def test_api_probes_are_real_routes_on_the_bound_port() -> None:
    api = container("api")
    settings = Settings.from_env(environment("api"))
    port = int(settings.api_bind.rpartition(":")[2])
    assert settings.api_bind.startswith("0.0.0.0:")  # reachable from the kubelet
    assert [(p["name"], p["containerPort"]) for p in api["ports"]] == [("http", port)]
    routes = {
        rule.rule for rule in create_app(settings, fakeredis.FakeRedis()).url_map.iter_rules()
    }
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["path"] in routes
        assert api[probe]["httpGet"]["port"] == "http"
    annotations = find("Deployment", "api")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] in routes
    service = find("Service", "api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pod_labels = find("Deployment", "api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def gunicorn_config(env: dict[str, str]) -> dict[str, Any]:
    """gunicorn.conf.py's values under env, read in a child: it sets up metrics files."""
    code = (
        "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps({k: c[k] for k in ('bind', 'graceful_timeout', 'timeout')}))"
    )
    clean = {k: v for k, v in os.environ.items() if k.upper() not in Settings.__dataclass_fields__}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def test_api_grace_outlasts_the_pause_and_gunicorns_graceful_timeout() -> None:
    config = gunicorn_config(environment("api"))
    spec = find("Deployment", "api")["spec"]["template"]["spec"]
    pause = container("api")["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert config["bind"] == ["0.0.0.0:8000"]
    assert spec["terminationGracePeriodSeconds"] > int(pause[1]) + config["graceful_timeout"]


def test_worker_grace_outlasts_the_task_hard_time_limit() -> None:
    settings = Settings.from_env(environment("worker"))
    limit = create_celery(settings).conf.task_time_limit
    spec = find("Deployment", "worker")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > limit
    port = int(settings.worker_metrics_bind.rpartition(":")[2])
    annotations = find("Deployment", "worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert [p["containerPort"] for p in container("worker")["ports"]] == [port]


def test_exactly_one_beat_replaced_by_recreation() -> None:
    beat = find("Deployment", "beat")["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}
    scaled = {
        r["spec"]["scaleTargetRef"]["name"]
        for r in RESOURCES
        if r["kind"] == "HorizontalPodAutoscaler"
    }
    assert scaled == {find("Deployment", "api")["metadata"]["name"]}


def test_the_api_has_a_disruption_budget_and_an_autoscaler() -> None:
    api = find("Deployment", "api")
    pdb = find("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    hpa = find("HorizontalPodAutoscaler")["spec"]
    # Never down to one pod: a drain or a rollout would leave no API at all.
    assert hpa["minReplicas"] >= 2 and pdb["maxUnavailable"] == 1


def dockerfile_uid() -> int:
    found = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert found
    return int(found[1])


@pytest.mark.parametrize("component", COMPONENTS)
def test_pods_run_unprivileged_on_a_read_only_root(component: str) -> None:
    spec = find("Deployment", component)["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == dockerfile_uid()
    main = container(component)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # Prometheus' multiprocess files go to a temporary directory: /tmp must be writable.
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    resources = main["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


@pytest.mark.parametrize("path", sorted(BASE.glob("*.yaml")), ids=lambda p: p.name)
def test_no_secrets_in_the_manifests(path: Path) -> None:
    # A field named for tokens, set to a boolean, holds no secret.
    text = re.sub(r"automountServiceAccountToken: (true|false)", "", path.read_text())
    for what, pattern in SECRET_PATTERNS.items():
        found = pattern.search(text)
        assert not found, f"{path.name} holds {what}: {found[0] if found else ''!r}"
