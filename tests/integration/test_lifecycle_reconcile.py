"""The lifecycle on the test cluster: Dataset -> PretrainJob -> FineTune -> Evaluation -> Deployment, applied at once.

Each waits for the one before it and starts by itself; kwok plays the pods, the test ends them, and the
Evaluation's verdict reaches its status from the pod's termination message.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import example, lora_deployment
from tests.integration.conftest import Kubectl, Operators, apply, exists, finish_job_pod, get, phase, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]


def test_the_lifecycle_orders_itself_by_references(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                   operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, lora_deployment(), *(example(kind) for kind in ("Evaluation", "FineTune", "PretrainJob",
                                                                              "Dataset")))

    def waiting_for(kind: str, name: str) -> str | None:
        return (get(kubectl, namespace, f"{kind}.llmops.dev/{name}").get("status") or {}).get("waitingFor")

    wait_until("the chain waits", lambda: waiting_for("pretrainjob", "tiny-shakespeare") == "Dataset shakespeare"
               and waiting_for("finetune", "tiny-shakespeare-lora") == "PretrainJob tiny-shakespeare"
               and waiting_for("evaluation", "tiny-shakespeare-lora") == "FineTune tiny-shakespeare-lora")

    finish_job_pod(cluster, namespace, "shakespeare-data-1")
    finish_job_pod(cluster, namespace, "tiny-shakespeare-train-1")
    finish_job_pod(cluster, namespace, "tiny-shakespeare-lora-finetune-1")
    wait_until("FineTune Succeeded", lambda: phase(kubectl, namespace, "tiny-shakespeare-lora", "finetune")
               == "Succeeded")
    config = json.loads(get(kubectl, namespace, "configmap/tiny-shakespeare-lora-eval-1")["data"]["config.json"])
    assert config["modelUri"].endswith(f"/{namespace}/finetunes/tiny-shakespeare-lora/model")

    assert get(kubectl, namespace, "llmdeploy/tiny-shakespeare")["status"]["phase"] == "Waiting"
    assert not exists(kubectl, namespace, "deployment.apps/tiny-shakespeare-r1")  # nothing served before the verdict
    verdict = {"verdict": "Passed", "results": [
        {"task": "heldout", "metric": "perplexity", "value": 123.0, "threshold": "<= 400", "margin": 277.0,
         "passed": True}]}
    finish_job_pod(cluster, namespace, "tiny-shakespeare-lora-eval-1", json.dumps(verdict))
    kubectl("wait", "--for=condition=Passed", "evaluation.llmops.dev/tiny-shakespeare-lora", "-n", namespace,
            "--timeout=60s")
    status = get(kubectl, namespace, "evaluation.llmops.dev/tiny-shakespeare-lora")["status"]
    assert status["verdict"] == "Passed" and status["results"][0]["value"] == 123.0
    assert "Passed" in kubectl("get", "llmeval", "-n", namespace).stdout

    # The model that passed is served: the Deployment's gate compared the artifact the Evaluation scored.
    kubectl("wait", "--for=condition=Ready", "llmdeploy/tiny-shakespeare", "-n", namespace, "--timeout=60s")
    served = get(kubectl, namespace, "llmdeploy/tiny-shakespeare")["status"]
    assert served["phase"] == "Available" and served["history"][0]["modelUri"] == status["modelUri"]
    server = get(kubectl, namespace, "deployment.apps/tiny-shakespeare-r1")
    assert server["spec"]["replicas"] == 2 and status["modelUri"] in \
        server["spec"]["template"]["spec"]["containers"][0]["args"][1]
