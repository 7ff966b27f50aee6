"""The chart's opt-in PodMonitor for the model servers, rendered by the real helm binary and checked against the
pods the operator really makes (operator/reconcile/serving/revisions.py)."""

from __future__ import annotations

import re
from typing import Any

from llmops.operator.reconcile.objects import LABEL_NAME
from llmops.operator.reconcile.serving import revisions
from llmops.operator.settings import OperatorSettings
from tests.conftest import example, patched
from tests.integration.test_helm import CHART, helm, only, render

ON = "serverMetrics.podMonitor.enabled=true"


def meta_label(pod_label: str) -> str:
    """The discovery label Prometheus' Kubernetes SD gives a pod label (invalid characters become `_`)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def relabel(rules: list[dict[str, Any]], discovered: dict[str, str]) -> dict[str, str]:
    """The target labels after `replace` relabelings with the defaults (separator ';', regex (.*), $1)."""
    out = dict(discovered)
    for rule in rules:
        assert rule.get("action", "replace") == "replace" and "regex" not in rule and "replacement" not in rule
        value = ";".join(out.get(label, "") for label in rule["sourceLabels"])
        if value:
            out[rule["targetLabel"]] = value
    return out


def server_pod() -> dict[str, Any]:
    """The pod template of revision 3 of the lifecycle example's Deployment, as the operator applies it."""
    from llmops.operator.api.admission import parse

    deployment = parse(patched(example("Deployment"), {"metadata": {"namespace": "team", "uid": "u"}}))
    settings = OperatorSettings(server_image="server:1")
    revision = revisions.RevisionSpec(3, "abc", "s3://models/m", revisions.server_image(deployment, settings))
    (apps,) = [c for c in revisions.revision_children(deployment, revision, 1, settings) if c["kind"] == "Deployment"]
    return apps["spec"]["template"]


def test_no_podmonitor_unless_enabled() -> None:
    assert not [d for d in render() if d["kind"] == "PodMonitor"]


def test_podmonitor_selects_the_server_pods_and_labels_deployment_and_revision() -> None:
    monitor = only(render(ON), "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "llmops-system"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    pod = server_pod()
    labels = pod["metadata"]["labels"]
    wanted = spec["selector"]["matchLabels"]
    assert wanted == {"app.kubernetes.io/component": "model-server", "app.kubernetes.io/managed-by": "llmops-operator"}
    assert wanted.items() <= labels.items(), "the PodMonitor must select the pods the operator makes"
    (endpoint,) = spec["podMetricsEndpoints"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert endpoint["port"] in ports
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "15s")
    # What Prometheus discovers for such a pod, relabelled by the chart's rules: the labels analysis queries.
    discovered = {meta_label(k): v for k, v in labels.items()} | {"__meta_kubernetes_namespace": "team"}
    target = relabel(endpoint["relabelings"], discovered)
    assert target["deployment"] == labels[LABEL_NAME] == "tiny-shakespeare"
    assert target["revision"] == labels[revisions.LABEL_REVISION] == "3"


def test_podmonitor_values_interval_labels_and_watched_namespaces() -> None:
    monitor = only(render(ON, "serverMetrics.podMonitor.interval=5s", "serverMetrics.podMonitor.labels.release=kps",
                          "watchNamespaces={team-a,team-b}"), "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "5s"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_schema_rejects_a_bad_interval_and_unknown_keys() -> None:
    for value in ("serverMetrics.podMonitor.interval=soon", "serverMetrics.podMonitor.enable=true"):
        result = helm("template", "llmops", str(CHART), "--set", ON, "--set", value)
        assert result.returncode != 0 and "serverMetrics" in result.stderr, (value, result.stderr)
