"""What the operator leaves on the objects it touches, on a real API server: no finalizer unless a resource asks
for artifact cleanup, and one field manager, `llmops-operator`, for every write (children, status, finalizers,
Events). A GitOps tool or a person deleting a resource, or its namespace, never waits for the operator."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import example, patched
from tests.integration.conftest import Kubectl, Operators, apply, exists, finish_job_pod, get, phase, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]
OPERATOR, TESTS = "llmops-operator", "llmops-tests"
EARLIER_FINALIZER = "llmops.dev/finalizer"  # what builds with Kopf timers put on every resource


def dataset(name: str, **output: object) -> dict[str, Any]:
    return patched(example("Dataset"), {"metadata": {"name": name}, "spec": {"output": output}})


def with_fields(kubectl: Kubectl, namespace: str, what: str) -> dict[str, Any]:
    """`kubectl get -o json` with metadata.managedFields (which it hides by default)."""
    return json.loads(kubectl("get", what, "-n", namespace, "-o", "json", "--show-managed-fields").stdout)


def managers(obj: dict[str, Any]) -> dict[str, set[str]]:
    """Field managers of an object by subresource ("" the object itself, "status")."""
    out: dict[str, set[str]] = {}
    for entry in obj["metadata"].get("managedFields", []):
        out.setdefault(entry.get("subresource", ""), set()).add(entry["manager"])
    return out


def test_a_reconciled_resource_has_no_finalizer_and_deletes_while_the_operator_is_down(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    replica = operators.start("op", {"LLMOPS_WATCH_NAMESPACES": namespace})
    apply(kubectl, namespace, dataset("kept"), dataset("other"))
    for name in ("kept", "other"):
        wait_until(f"{name} Running", lambda n=name: phase(kubectl, namespace, n) == "Running", timeout=60)
        assert get(kubectl, namespace, f"dataset.llmops.dev/{name}")["metadata"].get("finalizers") is None
    replica.stop(signal.SIGKILL)  # down, not shut down: nothing of it runs any more
    # The workloads end (kwok's pods, unlike a kubelet's, would stay Terminating when deleted, holding their Job's
    # pod finalizer, and a namespace deletes its pods first).
    for name in ("kept", "other"):
        finish_job_pod(cluster, namespace, f"{name}-data-1")

    deleted = kubectl("delete", "dataset.llmops.dev/kept", "-n", namespace, "--timeout=20s", check=False)
    assert deleted.returncode == 0, deleted.stderr
    assert not exists(kubectl, namespace, "dataset.llmops.dev/kept")
    # The whole namespace too, with nobody to release anything.
    gone = kubectl("delete", "namespace", namespace, "--timeout=60s", check=False)
    left = "" if gone.returncode == 0 else kubectl("get", f"namespace/{namespace}", "-o", "json", check=False).stdout
    assert gone.returncode == 0, f"{gone.stderr}{left}"


def test_the_finalizer_of_earlier_builds_is_removed(kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    upgraded = patched(dataset("upgraded"), {"metadata": {"finalizers": [EARLIER_FINALIZER]}})
    apply(kubectl, namespace, upgraded)
    operators.start("op", {"LLMOPS_WATCH_NAMESPACES": namespace})
    wait_until("the finalizer removed", lambda: EARLIER_FINALIZER not in (
        get(kubectl, namespace, "dataset.llmops.dev/upgraded")["metadata"].get("finalizers") or []))
    wait_until("Running", lambda: phase(kubectl, namespace, "upgraded") == "Running", timeout=60)


def test_every_write_of_the_operator_is_under_one_field_manager(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op", {"LLMOPS_WATCH_NAMESPACES": namespace})
    apply(kubectl, namespace, dataset("scratch", retainArtifacts=False, credentialsSecret="store"))
    wait_until("Running", lambda: phase(kubectl, namespace, "scratch") == "Running", timeout=60)

    resource = with_fields(kubectl, namespace, "dataset.llmops.dev/scratch")
    assert resource["metadata"]["finalizers"] == ["llmops.dev/delete-artifacts"]  # the one it asked for
    # The spec is the test's; the finalizer and the status are the operator's.
    assert managers(resource) == {"": {TESTS, OPERATOR}, "status": {OPERATOR}}
    (operator_fields,) = [e["fieldsV1"] for e in resource["metadata"]["managedFields"]
                          if e["manager"] == OPERATOR and not e.get("subresource")]
    assert json.dumps(operator_fields) == json.dumps({"f:metadata": {"f:finalizers": {
        ".": {}, 'v:"llmops.dev/delete-artifacts"': {}}}})

    children = [item for what in ("jobs", "configmaps") for item in with_fields(kubectl, namespace, what)["items"]
                if item["metadata"].get("labels", {}).get("llmops.dev/name") == "scratch"]
    assert {c["kind"] for c in children} == {"Job", "ConfigMap"}
    for child in children:
        # The Job controller writes a Job's status; everything else about a child is the operator's.
        assert managers(child)[""] == {OPERATOR}, child["metadata"]["name"]
        assert managers(child).keys() <= {"", "status"}
    events = [e for e in with_fields(kubectl, namespace, "events")["items"] if e["involvedObject"]["name"] == "scratch"
              and e["involvedObject"]["kind"] == "Dataset"]
    assert events and all(managers(e) == {"": {OPERATOR}} for e in events)
    assert {e["source"]["component"] for e in events} == {OPERATOR}

    lease = cluster.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/llmops-system/leases/{operators.lease}")
    assert managers(lease) == {"": {OPERATOR}}


def test_kubectl_describe_shows_the_operators_events(kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op", {"LLMOPS_WATCH_NAMESPACES": namespace})
    apply(kubectl, namespace, dataset("described"))
    wait_until("Running", lambda: phase(kubectl, namespace, "described") == "Running", timeout=60)
    described = kubectl("describe", "dataset.llmops.dev/described", "-n", namespace).stdout
    events = [line.split() for line in described[described.index("Events:"):].splitlines()[3:] if line.strip()]
    assert events and all(line[0] in ("Normal", "Warning") and line[3] == OPERATOR for line in events)
