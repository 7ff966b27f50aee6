"""The test control plane itself: fake CPU and GPU pools, pods that run and finish on request."""

from __future__ import annotations

import json

import pytest

from tests.cluster.cluster import TestCluster
from tests.integration.conftest import Kubectl

pytestmark = pytest.mark.cluster


def test_version_is_the_real_release(kubectl: Kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith("v1.34.")


def test_fake_node_pools(kubectl: Kubectl) -> None:
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    pools = {}
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
        pools.setdefault(node["metadata"]["labels"]["llmops.dev/pool"], []).append(node)
    assert sorted(pools) == ["cpu", "gpu"]
    for gpu_node in pools["gpu"]:
        assert gpu_node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu_node["spec"]["taints"]


def job(name: str, exit_code_rule: int | None = None, gpus: int = 0) -> dict:
    container = {"name": "main", "image": "busybox"}
    pod_spec: dict = {"restartPolicy": "Never", "containers": [container]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
        pod_spec["nodeSelector"] = {"llmops.dev/pool": "gpu"}
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    spec: dict = {"backoffLimit": 3, "template": {"spec": pod_spec}}
    if exit_code_rule is not None:
        spec["podFailurePolicy"] = {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [exit_code_rule]}}]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def running_pod(cluster: TestCluster, namespace: str, job_name: str) -> str:
    found: list[str] = []

    def one_running() -> bool:
        pods = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name={job_name}")
        found[:] = [p["metadata"]["name"] for p in pods["items"] if p["status"].get("phase") == "Running"]
        return len(found) == 1

    cluster.wait_for(f"a running pod of job {job_name}", one_running)
    return found[0]


def job_condition(cluster: TestCluster, namespace: str, name: str, condition: str) -> bool:
    status = cluster.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")["status"]
    return any(c["type"] == condition and c["status"] == "True" for c in status.get("conditions", []))


def test_a_job_pod_runs_and_succeeds_on_request(cluster: TestCluster, kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job("ok", gpus=8)))
    pod = running_pod(cluster, namespace, "ok")
    assert cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")["spec"]["nodeName"].startswith("gpu-")
    cluster.finish_pod(namespace, pod, exit_code=0)
    cluster.wait_for("job ok Complete", lambda: job_condition(cluster, namespace, "ok", "Complete"))


def test_a_pod_failure_policy_sees_the_exit_code(cluster: TestCluster, kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job("config-error", exit_code_rule=42)))
    pod = running_pod(cluster, namespace, "config-error")
    finished = cluster.finish_pod(namespace, pod, exit_code=42)
    assert finished["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 42
    cluster.wait_for("job failed by policy", lambda: job_condition(cluster, namespace, "config-error", "Failed"))
