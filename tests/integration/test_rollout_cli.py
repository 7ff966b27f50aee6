"""`llmops rollout` against a real API server: commands set one annotation and never the spec.

No operator runs here: the test writes the status through the status subresource as the operator would, then
runs the real `llmops rollout ...` command and reads back what it changed.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmops.operator.api.v1alpha1 import rollout_commands as commands
from tests.cluster.cluster import TestCluster
from tests.conftest import example
from tests.integration.conftest import BIN, Kubectl, apply, get

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]

NAME = "tiny-shakespeare"
RESOURCE = f"deployments.llmops.dev/{NAME}"
NOW = "2026-12-01T10:00:00Z"


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": NOW}


def revision(number: int, outcome: str, deployed: str | None = None) -> dict[str, Any]:
    out = {"revision": number, "digest": f"sha256:{number}", "modelUri": f"s3://llmops-test/models/run-{number}",
           "image": "ghcr.io/llmops/serve:test", "evaluation": "tiny-shakespeare-lora", "outcome": outcome,
           "generation": 1}
    return {**out, "deployedAt": deployed} if deployed else out


ROLLING_OUT = {
    "phase": "Progressing", "observedGeneration": 1, "currentRevision": 2, "replicas": 3, "readyReplicas": 3,
    "conditions": [condition("Ready", "True", "Serving", "revision 2 serves"),
                   condition("Progressing", "True", "RollingOut", "revision 3 at step 1, 10% of traffic")],
    "canary": {"revision": 3, "previousRevision": 2, "step": 0, "weight": 10, "desiredWeight": 10},
    "history": [revision(1, "Superseded", "2026-11-01T09:00:00Z"), revision(2, "Stable", "2026-11-20T09:00:00Z"),
                revision(3, "Canary")],
}
AVAILABLE = {**ROLLING_OUT, "phase": "Available", "canary": None,
             "conditions": [condition("Ready", "True", "Serving", "revision 2 serves"),
                            condition("Progressing", "False", "RolloutComplete", "revision 2 serves all traffic")],
             "history": ROLLING_OUT["history"][:2]}


def write_status(kubectl: Kubectl, namespace: str, status: dict[str, Any]) -> None:
    """What the operator does: a merge patch of the status subresource (null removes a field)."""
    kubectl("patch", RESOURCE, "-n", namespace, "--subresource=status", "--type=merge",
            "--field-manager=llmops-operator", "-p", json.dumps({"status": status}))


def rollout(cluster: TestCluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "llmops"), "rollout", *args, "-n", namespace,
                           "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=60)


def deployed(kubectl: Kubectl, namespace: str, status: dict[str, Any]) -> dict[str, Any]:
    apply(kubectl, namespace, example("Deployment"))
    write_status(kubectl, namespace, status)
    return get(kubectl, namespace, RESOURCE)


def rollout_annotations(obj: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k in commands.KEYS}


@pytest.mark.parametrize(("args", "key", "asked"), [
    (("promote",), commands.PROMOTE, "asked to promote revision 3"),
    (("abort",), commands.ABORT, "asked to abort revision 3 (roll it back to revision 2"),
    (("undo", "--to-revision", "1"), commands.UNDO, "asked to undo to revision 1"),
    (("undo",), commands.UNDO, "asked to undo to revision 1"),  # the one that served before the stable
])
def test_a_command_sets_its_annotation_and_never_the_spec(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                          args: tuple[str, ...], key: str, asked: str) -> None:
    before = deployed(kubectl, namespace, ROLLING_OUT)
    result = rollout(cluster, namespace, args[0], NAME, *args[1:])
    assert result.returncode == 0, result.stderr
    assert asked in result.stdout

    after = get(kubectl, namespace, RESOURCE)
    (value,) = rollout_annotations(after).values()
    assert list(rollout_annotations(after)) == [key]
    if key == commands.UNDO:
        undone, token = commands.parse_undo(value)
        assert undone == 1
    else:
        token = value
    assert datetime.fromisoformat(token).tzinfo == UTC  # the CLI's token: the UTC time, ISO 8601
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"] and after["status"] == before["status"]
    managed = json.loads(kubectl("get", RESOURCE, "-n", namespace, "-o", "json", "--show-managed-fields").stdout)
    (entry,) = [m for m in managed["metadata"]["managedFields"] if m["manager"] == "llmops-cli"]
    assert entry["operation"] == "Update" and "subresource" not in entry
    assert list(entry["fieldsV1"]) == ["f:metadata"] and list(entry["fieldsV1"]["f:metadata"]) == ["f:annotations"]
    assert set(entry["fieldsV1"]["f:metadata"]["f:annotations"]) - {"."} == {f"f:{key}"}


@pytest.mark.parametrize(("status", "args", "why"), [
    (AVAILABLE, ("promote",), f"{NAME} has no canary to promote: revision 2 serves all traffic (phase Available)"),
    (AVAILABLE, ("abort",), f"{NAME} has no canary to abort"),
    (AVAILABLE, ("retry",), f"{NAME} has nothing to retry: no revision was RolledBack, Aborted or Failed"),
    (ROLLING_OUT, ("retry",), "revision 3 of tiny-shakespeare is rolling out now; nothing to retry"),
    (AVAILABLE, ("undo", "--to-revision", "9"), "revision 9 is not in the history of tiny-shakespeare"),
    (AVAILABLE, ("undo", "--to-revision", "2"), "revision 2 is the stable revision of tiny-shakespeare already"),
])
def test_a_command_that_makes_no_sense_now_exits_1_naming_why(cluster: TestCluster, kubectl: Kubectl,
                                                              namespace: str, status: dict[str, Any],
                                                              args: tuple[str, ...], why: str) -> None:
    before = deployed(kubectl, namespace, status)
    result = rollout(cluster, namespace, args[0], NAME, *args[1:])
    assert result.returncode == 1
    assert why in result.stderr
    after = get(kubectl, namespace, RESOURCE)
    assert rollout_annotations(after) == {} and after["metadata"]["resourceVersion"] == \
        before["metadata"]["resourceVersion"]


def test_a_missing_deployment_is_named_with_its_namespace(cluster: TestCluster, namespace: str) -> None:
    result = rollout(cluster, namespace, "promote", "nope")
    assert result.returncode == 1
    assert f'deployments.llmops.dev "nope" not found in namespace "{namespace}"' in result.stderr


def test_status_prints_the_canary_and_the_history(cluster: TestCluster, kubectl: Kubectl, namespace: str) -> None:
    obj = deployed(kubectl, namespace, ROLLING_OUT)
    result = rollout(cluster, namespace, "status", NAME)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"Deployment {NAME} (namespace {namespace}, generation 1)" == lines[0]
    assert "Canary:    revision 3, step 1 of 3, weight 10%" in lines
    history = result.stdout.split("History:\n")[1].splitlines()
    assert [row.split()[:4] for row in history[1:]] == [
        ["1", "s3://llmops-test/models/run-1", "tiny-shakespeare-lora", "Superseded"],
        ["2", "s3://llmops-test/models/run-2", "tiny-shakespeare-lora", "Stable"],
        ["3", "s3://llmops-test/models/run-3", "tiny-shakespeare-lora", "Canary"]]

    raw = rollout(cluster, namespace, "status", NAME, "-o", "json")
    assert raw.returncode == 0 and json.loads(raw.stdout) == obj["status"]


def test_status_watch_exits_0_once_available(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                             tmp_path: Path) -> None:
    deployed(kubectl, namespace, ROLLING_OUT)
    out = tmp_path / "watch.out"
    with out.open("w") as sink:
        watching = subprocess.Popen([str(BIN / "llmops"), "rollout", "status", NAME, "-n", namespace, "--watch",
                                     "--timeout", "60s", "--kubeconfig", str(cluster.kubeconfig)],
                                    stdout=sink, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 30
            while "Phase:     Progressing" not in out.read_text() and time.monotonic() < deadline:
                assert watching.poll() is None, out.read_text()
                time.sleep(0.2)
            write_status(kubectl, namespace, AVAILABLE)
            assert watching.wait(timeout=30) == 0, out.read_text()
        finally:
            watching.kill()
    text = out.read_text()
    assert text.index("Phase:     Progressing") < text.index("Phase:     Available")


def test_status_watch_exits_1_once_degraded_and_2_on_timeout(cluster: TestCluster, kubectl: Kubectl,
                                                             namespace: str) -> None:
    deployed(kubectl, namespace, ROLLING_OUT)
    timed_out = rollout(cluster, namespace, "status", NAME, "--watch", "--timeout", "2s")
    assert timed_out.returncode == 2
    assert "timed out after 2s" in timed_out.stderr and "Phase:     Progressing" in timed_out.stdout

    write_status(kubectl, namespace, {**AVAILABLE, "phase": "Degraded"})
    degraded = rollout(cluster, namespace, "status", NAME, "--watch", "--timeout", "30s")
    assert degraded.returncode == 1 and f"{NAME} is Degraded" in degraded.stderr
