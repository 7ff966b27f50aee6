"""`output.retainArtifacts: false`: deleting a resource on a real API server stops its workload, runs one
cleanup Job, and lets the resource go only when that Job succeeded."""

from __future__ import annotations

import pytest

from llmops.trainer.config import exit_codes
from tests.cluster.cluster import TestCluster
from tests.conftest import example, patched
from tests.integration.conftest import Kubectl, Operators, apply, exists, get, running_pod, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]
FINALIZER = "llmops.dev/delete-artifacts"


def dataset(name: str, **output: object) -> dict:
    return patched(example("Dataset"), {"metadata": {"name": name}, "spec": {"output": output}})


def condition(kubectl: Kubectl, namespace: str, name: str) -> dict | None:
    status = get(kubectl, namespace, f"dataset.llmops.dev/{name}").get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == "ArtifactsDeleted"), None)


def test_deleting_runs_a_cleanup_job_then_releases_the_resource(cluster: TestCluster, kubectl: Kubectl,
                                                                namespace: str, operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, dataset("scratch", retainArtifacts=False, credentialsSecret="store"))
    running_pod(cluster, namespace, "scratch-data-1")
    assert FINALIZER in get(kubectl, namespace, "dataset.llmops.dev/scratch")["metadata"]["finalizers"]

    kubectl("delete", "dataset.llmops.dev/scratch", "-n", namespace, "--wait=false")
    # The workload goes first; then one cleanup Job with the resource's credentials.
    wait_until("workload Job deleted", lambda: not exists(kubectl, namespace, "job/scratch-data-1"))
    pod = running_pod(cluster, namespace, "scratch-cleanup")
    job = get(kubectl, namespace, "job/scratch-cleanup")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["llmops-artifacts"]
    assert {"secretRef": {"name": "store"}} in container["envFrom"]
    wait_until("cleanup condition", lambda: (condition(kubectl, namespace, "scratch") or {}).get("reason")
               == "DeletingArtifacts")
    assert exists(kubectl, namespace, "dataset.llmops.dev/scratch")  # held by the finalizer meanwhile

    cluster.finish_pod(namespace, pod, exit_code=0)
    wait_until("Dataset gone", lambda: not exists(kubectl, namespace, "dataset.llmops.dev/scratch"))


def test_a_failed_cleanup_keeps_the_resource_and_says_how_to_give_up(cluster: TestCluster, kubectl: Kubectl,
                                                                     namespace: str, operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, dataset("stubborn", retainArtifacts=False))
    running_pod(cluster, namespace, "stubborn-data-1")
    kubectl("delete", "dataset.llmops.dev/stubborn", "-n", namespace, "--wait=false")
    # Exit 78 (e.g. the cleanup refusing a bucket root) fails the Job at once; other codes are retried.
    cluster.finish_pod(namespace, running_pod(cluster, namespace, "stubborn-cleanup"),
                       exit_code=exit_codes.CONFIG_ERROR)
    wait_until("cleanup failed", lambda: (condition(kubectl, namespace, "stubborn") or {}).get("reason")
               == "CleanupFailed")
    assert FINALIZER in condition(kubectl, namespace, "stubborn")["message"]
    kubectl("patch", "dataset.llmops.dev/stubborn", "-n", namespace, "--type=merge", "-p",
            '{"metadata": {"finalizers": null}}')
    wait_until("Dataset gone", lambda: not exists(kubectl, namespace, "dataset.llmops.dev/stubborn"))


def test_artifacts_are_kept_by_default(kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, dataset("kept"))
    wait_until("Job created", lambda: exists(kubectl, namespace, "job/kept-data-1"))
    assert FINALIZER not in get(kubectl, namespace, "dataset.llmops.dev/kept")["metadata"].get("finalizers", [])
    kubectl("delete", "dataset.llmops.dev/kept", "-n", namespace, "--timeout=30s")
    assert not exists(kubectl, namespace, "job/kept-cleanup")
