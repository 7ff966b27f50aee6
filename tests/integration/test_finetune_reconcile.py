"""A multi-node FineTune on the test cluster: torchrun on an Indexed Job across the fake GPU pool."""

from __future__ import annotations

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import DELETE, example, patched
from tests.integration.conftest import Kubectl, Operators, apply, get, phase, wait_until
from tests.integration.test_pretrainjob_reconcile import GPU_POOL, pods_of

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]

JOB = "tiny-shakespeare-lora-finetune-1"


def test_a_two_node_fine_tune_runs_one_pod_per_gpu_node(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                        operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, patched(example("FineTune"), {"spec": {
        "base": {"pretrainJob": DELETE, "uri": "s3://bucket/base/model"},
        "data": {"uri": "s3://bucket/data/instructions.jsonl"}, "nodePool": GPU_POOL}}))

    def running() -> list[dict]:
        return [p for p in pods_of(cluster, namespace, JOB) if p["status"].get("phase") == "Running"]

    wait_until("fine-tuning pods Running", lambda: len(running()) == 2, timeout=60)
    pods = running()
    assert {p["spec"]["nodeName"] for p in pods} == {"gpu-0", "gpu-1"}  # 8 GPUs each: one pod per node
    ranks = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods}
    assert ranks == {"0", "1"}
    assert {p["spec"]["subdomain"] for p in pods} == {JOB}
    assert get(kubectl, namespace, f"service/{JOB}")["spec"]["clusterIP"] == "None"
    wait_until("FineTune Running", lambda: phase(kubectl, namespace, "tiny-shakespeare-lora", "finetune") == "Running")

    for pod in pods:
        cluster.finish_pod(namespace, pod["metadata"]["name"], exit_code=0)
    kubectl("wait", "--for=condition=Succeeded", "finetune.llmops.dev/tiny-shakespeare-lora", "-n", namespace,
            "--timeout=60s")
    status = get(kubectl, namespace, "finetune.llmops.dev/tiny-shakespeare-lora")["status"]
    assert status["artifactUri"].endswith(f"/{namespace}/finetunes/tiny-shakespeare-lora/model")
