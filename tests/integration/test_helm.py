"""The Helm chart, checked with the real helm binary (installed by `make setup`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "llmops-operator"
HELM = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM, "helm is installed by `make setup` (hack/install-kube-tools.sh)"
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def render(*values: str, include_crds: bool = False) -> list[dict[str, Any]]:
    args = ["template", "llmops", str(CHART), "--namespace", "llmops-system"]
    for value in values:
        args += ["--set", value]
    if include_crds:
        args.append("--include-crds")
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    return found


def test_helm_is_the_real_v4_binary() -> None:
    assert helm("version", "--short").stdout.startswith("v4.")


def test_chart_lints_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_has_the_operator_and_its_least_privilege_rbac() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "Deployment",
                     "Role", "RoleBinding", "Service", "ServiceAccount"]
    for role in (d for d in docs if d["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']} uses a wildcard in {key}"
    workloads = only(docs, "ClusterRole", "-workloads")
    allowed = {(group, resource, verb) for rule in workloads["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert ("batch", "jobs", "create") in allowed
    assert ("llmops.dev", "pretrainjobs/status", "patch") in allowed
    assert ("", "pods", "delete") not in allowed  # pods are read, never written
    # Live progress reads the rank-0 pod's log, and nothing else of pods' subresources.
    assert {(g, r, v) for g, r, v in allowed if r.startswith("pods/")} == {("", "pods/log", "get")}
    assert not any(resource == "secrets" for _, resource, _ in allowed)  # Secrets are only referenced
    # A stuck Job's Events are listed (field selector), never watched: a watch would stream the namespace's Events.
    assert {v for g, r, v in allowed if r == "events" and g == ""} == {"create", "patch", "list"}


def test_operator_pod_is_locked_down_and_probed() -> None:
    deployment = only(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert container["image"] == "ghcr.io/llmops-dev/operator:0.1.0"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LLMOPS_TRAINER_IMAGE"].startswith("ghcr.io/llmops-dev/trainer:")
    assert env["LLMOPS_PROGRESS_INTERVAL_SECONDS"] == "15"


def test_watching_named_namespaces_binds_roles_there_only() -> None:
    docs = render("watchNamespaces={team-a,team-b}")
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and d["metadata"]["name"].endswith("-workloads")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert not [d for d in docs if d["kind"] == "ClusterRoleBinding" and d["metadata"]["name"].endswith("-workloads")]
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LLMOPS_WATCH_NAMESPACES"] == "team-a,team-b"


def test_service_monitor_and_kuberay_are_opt_in() -> None:
    docs = render("metrics.serviceMonitor.enabled=true", "integrations.kuberay.enabled=true")
    monitor = only(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    groups = {g for rule in only(docs, "ClusterRole", "-workloads")["rules"] for g in rule["apiGroups"]}
    assert "ray.io" in groups
    assert "ray.io" not in {g for rule in only(render(), "ClusterRole", "-workloads")["rules"]
                            for g in rule["apiGroups"]}

    def kuberay_env(*values: str) -> str:
        (container,) = only(render(*values), "Deployment")["spec"]["template"]["spec"]["containers"]
        return next(e["value"] for e in container["env"] if e["name"] == "LLMOPS_KUBERAY")

    # Without the permissions the operator must not use (or watch) RayJobs at all.
    assert kuberay_env() == "off"
    assert kuberay_env("integrations.kuberay.enabled=true") == "auto"
    assert kuberay_env("integrations.kuberay.enabled=true", "integrations.kuberay.mode=on") == "on"


def test_chart_installs_the_generated_crds() -> None:
    crds = [d for d in render(include_crds=True) if d["kind"] == "CustomResourceDefinition"]
    on_disk = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert sorted(crds, key=lambda c: c["metadata"]["name"]) == sorted(on_disk, key=lambda c: c["metadata"]["name"])


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("replicaCount=-1", "/replicaCount"),
        ("logLevel=loud", "/logLevel"),
        ("progress.intervalSeconds=-5", "/progress/intervalSeconds"),
        ("metrics.port=80", "/metrics/port"),
        ("integrations.kuberay.mode=maybe", "/integrations/kuberay/mode"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("replicas=3", "replicas"),  # a typo of replicaCount: unknown keys are rejected
    ],
)
def test_values_schema_rejects_bad_values(value: str, complaint: str) -> None:
    result = helm("template", "llmops", str(CHART), "--set", value)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_service_monitor_without_service_fails_with_a_reason() -> None:
    result = helm("template", "llmops", str(CHART), "--set", "metrics.serviceMonitor.enabled=true",
                  "--set", "metrics.service.enabled=false")
    assert result.returncode != 0
    assert "needs metrics.service.enabled" in result.stderr
