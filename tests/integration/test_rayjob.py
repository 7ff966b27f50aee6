"""A Dataset with several workers becomes a KubeRay RayJob where the cluster serves RayJobs.

No KubeRay runs here: the test installs a minimal RayJob CRD of its own (spec and status kept as given) and plays
KubeRay: it starts the submitter Job from the RayJob's template and writes the RayJob's status, as KubeRay reports
a run.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import example, patched
from tests.integration.conftest import (
    ARTIFACT_ROOT,
    Kubectl,
    Operators,
    apply,
    exists,
    get,
    phase,
    running_pod,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]
CRD = "rayjobs.ray.io"


def rayjob_crd() -> dict:
    """Just enough of a RayJob CRD for the API server to serve ray.io/v1 rayjobs, with a status subresource."""
    loose = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": CRD},
            "spec": {"group": "ray.io", "scope": "Namespaced",
                     "names": {"kind": "RayJob", "listKind": "RayJobList", "plural": "rayjobs", "singular": "rayjob"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "properties": {"spec": loose, "status": loose}}}}]}}


@pytest.fixture
def kuberay(kubectl: Kubectl) -> Iterator[None]:
    apply(kubectl, "default", rayjob_crd())
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    yield
    kubectl("delete", f"crd/{CRD}", "--wait=false", check=False)


def set_ray_status(kubectl: Kubectl, namespace: str, name: str, **status: str) -> None:
    """Write the RayJob's status as KubeRay would."""
    kubectl("patch", f"rayjob.ray.io/{name}", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))


def start_submitter(kubectl: Kubectl, namespace: str, ray_job: dict) -> None:
    """What KubeRay does once the Ray cluster is up: a Job of the RayJob's name from its submitter pod template,
    the `ray job submit` command filled in."""
    template = ray_job["spec"]["submitterPodTemplate"]
    template["spec"]["containers"][0]["command"] = ["ray", "job", "submit", "--", ray_job["spec"]["entrypoint"]]
    # Owned by the RayJob, as KubeRay's is. Its labels default to its template's, which are ours: the operator must
    # still not take it for a stale child of its own and delete it.
    apply(kubectl, namespace, {"apiVersion": "batch/v1", "kind": "Job",
                               "metadata": {"name": ray_job["metadata"]["name"], "ownerReferences": [{
                                   "apiVersion": "ray.io/v1", "kind": "RayJob", "name": ray_job["metadata"]["name"],
                                   "uid": ray_job["metadata"]["uid"], "controller": True}]},
                               "spec": {"backoffLimit": 0, "template": template}})


@pytest.mark.usefixtures("kuberay")
def test_a_multi_worker_dataset_runs_as_a_ray_job_and_succeeds(cluster: TestCluster, kubectl: Kubectl,
                                                               namespace: str, operators: Operators) -> None:
    operators.start("op", env={"LLMOPS_PROGRESS_INTERVAL_SECONDS": "1"})
    execution = {"workers": 3, "resources": {"requests": {"cpu": "2"}},
                 "placement": {"nodeSelector": {"llmops.dev/pool": "cpu"}}}
    apply(kubectl, namespace, patched(example("Dataset"), {"metadata": {"name": "wide"},
                                                           "spec": {"execution": execution}}))
    wait_until("RayJob created", lambda: exists(kubectl, namespace, "rayjob.ray.io/wide-data-1"))

    ray_job = get(kubectl, namespace, "rayjob.ray.io/wide-data-1")
    owner = ray_job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Dataset", "wide", True)
    assert ray_job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmops-operator"
    spec = ray_job["spec"]
    assert shlex.split(spec["entrypoint"])[:3] == ["llmops-data", "--config", "/etc/llmops/config.json"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == 2  # the head is the third worker
    for pod in (head, workers["template"]["spec"]):
        assert pod["nodeSelector"] == {"llmops.dev/pool": "cpu"}
        assert pod["containers"][0]["resources"] == {"requests": {"cpu": "2"}}
    assert {"name": "config", "configMap": {"name": "wide-data-1"}} in head["volumes"]
    assert exists(kubectl, namespace, "configmap/wide-data-1")
    assert not get(kubectl, namespace, "jobs")["items"]  # no Job of ours: KubeRay makes its own submitter
    wait_until("Dataset Pending", lambda: phase(kubectl, namespace, "wide") == "Pending")

    start_submitter(kubectl, namespace, ray_job)
    set_ray_status(kubectl, namespace, "wide-data-1", jobDeploymentStatus="Running", jobStatus="RUNNING")
    wait_until("Dataset Running", lambda: phase(kubectl, namespace, "wide") == "Running")
    # `ray job submit` prints the driver's output: the pipeline's progress reaches the status from the submitter.
    submitter = running_pod(cluster, namespace, "wide-data-1")
    cluster.set_pod_log(namespace, submitter, [
        "Job 'raysubmit_1' submitted successfully", "Tailing logs until the job exits:",
        json.dumps({"event": "progress", "stage": "clean", "completed": 300, "total": 1200, "unit": "documents"})])
    wait_until("progress from the submitter's log", lambda: get(kubectl, namespace, "dataset.llmops.dev/wide")
               ["status"].get("progress", {}).get("percent") == "25%", timeout=30)
    set_ray_status(kubectl, namespace, "wide-data-1", jobDeploymentStatus="Complete", jobStatus="SUCCEEDED",
                   endTime="2026-11-24T08:00:00Z")
    kubectl("wait", "--for=condition=Succeeded", "dataset.llmops.dev/wide", "-n", namespace, "--timeout=45s")
    status = get(kubectl, namespace, "dataset.llmops.dev/wide")["status"]
    assert status["phase"] == "Succeeded" and status["jobName"] == "wide-data-1"
    assert status["artifactUri"] == f"{ARTIFACT_ROOT}/{namespace}/datasets/wide"


def test_without_kuberay_a_multi_worker_dataset_is_rejected_with_a_condition(kubectl: Kubectl, namespace: str,
                                                                             operators: Operators) -> None:
    operators.start("op", {"LLMOPS_KUBERAY": "off"})  # as the chart runs it without integrations.kuberay
    apply(kubectl, namespace, patched(example("Dataset"), {"metadata": {"name": "wide"},
                                                           "spec": {"execution": {"workers": 3}}}))
    kubectl("wait", "--for=condition=Failed", "dataset.llmops.dev/wide", "-n", namespace, "--timeout=45s")
    failed = next(c for c in get(kubectl, namespace, "dataset.llmops.dev/wide")["status"]["conditions"]
                  if c["type"] == "Failed")
    assert failed["reason"] == "KubeRayUnavailable" and "set workers to 1" in failed["message"]
    assert not get(kubectl, namespace, "jobs")["items"]
