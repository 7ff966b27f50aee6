"""A PretrainJob on the test cluster: it waits for its Dataset, then trains on the fake GPU pool."""

from __future__ import annotations

import pytest

from llmops.trainer.config import exit_codes
from tests.cluster.cluster import TestCluster
from tests.conftest import DELETE, example, patched
from tests.integration.conftest import Kubectl, Operators, apply, get, phase, running_pod, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]

GPU_POOL = {"nodes": 2, "gpusPerNode": 8, "nodeSelector": {"llmops.dev/pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


def pods_of(cluster: TestCluster, namespace: str, job: str) -> list[dict]:
    return cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name={job}")["items"]


def test_waits_for_its_dataset_then_runs_on_the_gpu_pool(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                          operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, patched(example("PretrainJob"), {"spec": {"nodePool": GPU_POOL}}))
    wait_until("PretrainJob Waiting", lambda: phase(kubectl, namespace, "tiny-shakespeare", "pretrainjob") == "Waiting")
    status = get(kubectl, namespace, "pretrainjob.llmops.dev/tiny-shakespeare")["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "WaitingForDataset" and "Dataset shakespeare does not exist yet" in ready["message"]
    assert not get(kubectl, namespace, "jobs")["items"]

    apply(kubectl, namespace, example("Dataset"))
    cluster.finish_pod(namespace, running_pod(cluster, namespace, "shakespeare-data-1"), exit_code=0)
    wait_until("training pods Running", lambda: len([p for p in pods_of(cluster, namespace, "tiny-shakespeare-train-1")
                                                     if p["status"].get("phase") == "Running"]) == 2, timeout=60)
    pods = pods_of(cluster, namespace, "tiny-shakespeare-train-1")
    assert {p["spec"]["nodeName"] for p in pods} == {"gpu-0", "gpu-1"}  # 8 GPUs each: one pod per node
    service = get(kubectl, namespace, "service/tiny-shakespeare-train-1")
    assert service["spec"]["clusterIP"] == "None"
    wait_until("PretrainJob Running", lambda: phase(kubectl, namespace, "tiny-shakespeare", "pretrainjob") == "Running")

    # A preempted pod is replaced without counting as a failure; then both nodes finish.
    preempted = pods[0]["metadata"]["name"]
    cluster.finish_pod(namespace, preempted, exit_code=exit_codes.PREEMPTED)
    wait_until("a replacement pod", lambda: len([p for p in pods_of(cluster, namespace, "tiny-shakespeare-train-1")
                                                 if p["status"].get("phase") == "Running"]) == 2, timeout=60)
    for pod in pods_of(cluster, namespace, "tiny-shakespeare-train-1"):
        if pod["status"].get("phase") == "Running":
            cluster.finish_pod(namespace, pod["metadata"]["name"], exit_code=0)
    kubectl("wait", "--for=condition=Succeeded", "pretrainjob.llmops.dev/tiny-shakespeare", "-n", namespace,
            "--timeout=60s")
    status = get(kubectl, namespace, "pretrainjob.llmops.dev/tiny-shakespeare")["status"]
    assert status["artifactUri"].endswith(f"/{namespace}/pretrainjobs/tiny-shakespeare/model")
    assert status["dataUri"].endswith(f"/{namespace}/datasets/shakespeare")
    table = kubectl("get", "ptj", "-n", namespace).stdout
    assert "Succeeded" in table


def test_a_node_pool_that_cannot_fit_says_so_in_the_status(kubectl: Kubectl, namespace: str,
                                                          operators: Operators) -> None:
    operators.start("op")
    too_big = {**GPU_POOL, "nodes": 1, "gpusPerNode": 16}  # the fake GPU nodes have 8 each
    manifest = patched(example("PretrainJob"), {"spec": {"data": {"dataset": DELETE, "uri": "s3://bucket/shards"},
                                                         "nodePool": too_big}})
    apply(kubectl, namespace, manifest)

    def reason() -> str | None:
        status = get(kubectl, namespace, "pretrainjob.llmops.dev/tiny-shakespeare").get("status") or {}
        return next((c["reason"] for c in status.get("conditions", []) if c["type"] == "Ready"), None)

    wait_until("Unschedulable in the status", lambda: reason() == "Unschedulable", timeout=60)
    status = get(kubectl, namespace, "pretrainjob.llmops.dev/tiny-shakespeare")["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Pending" and "Insufficient nvidia.com/gpu" in ready["message"]
