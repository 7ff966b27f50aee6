"""On the test cluster: a FineTune and an Evaluation follow their PretrainJob when it is retrained.

Editing a finished PretrainJob makes it train again; what consumed its old model waits, shows neither the old
model nor the old verdict as current, and then runs again under a new Job name (a completed Job is never re-created
under its own name), recording in status.inputs which run of the PretrainJob it consumed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import example, patched
from tests.integration.conftest import (
    ARTIFACT_ROOT,
    Kubectl,
    Operators,
    apply,
    exists,
    finish_job_pod,
    get,
    phase,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]

PASSED = json.dumps({"verdict": "Passed", "results": [
    {"task": "heldout", "metric": "perplexity", "value": 123.0, "threshold": "<= 400", "margin": 277.0,
     "passed": True}]})


def status(kubectl: Kubectl, namespace: str, what: str) -> dict[str, Any]:
    return get(kubectl, namespace, what).get("status") or {}


def test_a_retrained_model_is_fine_tuned_and_evaluated_again_as_new_runs(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, *(example(kind) for kind in ("Dataset", "PretrainJob", "FineTune", "Evaluation")))
    for job in ("shakespeare-data-1", "tiny-shakespeare-train-1", "tiny-shakespeare-lora-finetune-1"):
        finish_job_pod(cluster, namespace, job)
    finish_job_pod(cluster, namespace, "tiny-shakespeare-lora-eval-1", PASSED)
    kubectl("wait", "--for=condition=Passed", "evaluation.llmops.dev/tiny-shakespeare-lora", "-n", namespace,
            "--timeout=60s")
    (consumed,) = status(kubectl, namespace, "finetune.llmops.dev/tiny-shakespeare-lora")["inputs"]
    assert (consumed["kind"], consumed["name"], consumed["generation"], consumed["run"]) == (
        "PretrainJob", "tiny-shakespeare", 1, "tiny-shakespeare-train-1")
    assert consumed["artifactUri"] == f"{ARTIFACT_ROOT}/{namespace}/pretrainjobs/tiny-shakespeare/model"

    # Retrain: a new PretrainJob generation.
    apply(kubectl, namespace, patched(example("PretrainJob"), {"spec": {"training": {"maxSteps": 300}}}))
    wait_until("the PretrainJob trains again", lambda: exists(kubectl, namespace, "job/tiny-shakespeare-train-2"))

    def replaced() -> bool:
        ft = status(kubectl, namespace, "finetune.llmops.dev/tiny-shakespeare-lora")
        ev = status(kubectl, namespace, "evaluation.llmops.dev/tiny-shakespeare-lora")
        return ft.get("phase") == "Waiting" and ev.get("phase") == "Waiting"

    wait_until("what consumed the old model waits", replaced)
    ft = status(kubectl, namespace, "finetune.llmops.dev/tiny-shakespeare-lora")
    ev = status(kubectl, namespace, "evaluation.llmops.dev/tiny-shakespeare-lora")
    assert "artifactUri" not in ft and not ft.get("inputs")
    assert "verdict" not in ev and not ev.get("results") and "artifactUri" not in ev
    assert next(c for c in ev["conditions"] if c["type"] == "Passed")["status"] == "Unknown"
    assert "Passed" not in kubectl("get", "llmeval", "-n", namespace).stdout

    finish_job_pod(cluster, namespace, "tiny-shakespeare-train-2")
    wait_until("a second FineTune run", lambda: exists(kubectl, namespace, "job/tiny-shakespeare-lora-finetune-2"))
    assert not exists(kubectl, namespace, "job/tiny-shakespeare-lora-finetune-1")
    ft = status(kubectl, namespace, "finetune.llmops.dev/tiny-shakespeare-lora")
    assert ft["runNumber"] == 2 and ft["inputs"][0]["run"] == "tiny-shakespeare-train-2"
    assert ft["inputs"][0]["generation"] == 2 and "artifactUri" not in ft
    finish_job_pod(cluster, namespace, "tiny-shakespeare-lora-finetune-2")
    wait_until("a second Evaluation run", lambda: exists(kubectl, namespace, "job/tiny-shakespeare-lora-eval-2"))
    assert not exists(kubectl, namespace, "job/tiny-shakespeare-lora-eval-1")
    assert "verdict" not in status(kubectl, namespace, "evaluation.llmops.dev/tiny-shakespeare-lora")
    finish_job_pod(cluster, namespace, "tiny-shakespeare-lora-eval-2", PASSED)
    wait_until("scored again", lambda: phase(kubectl, namespace, "tiny-shakespeare-lora", "evaluation")
               == "Succeeded")
    ev = status(kubectl, namespace, "evaluation.llmops.dev/tiny-shakespeare-lora")
    assert ev["verdict"] == "Passed" and ev["modelRun"] == "FineTune/tiny-shakespeare-lora@" \
        "tiny-shakespeare-lora-finetune-2"
    assert {(i["kind"], i["run"]) for i in ev["inputs"]} == {
        ("FineTune", "tiny-shakespeare-lora-finetune-2"), ("PretrainJob", "tiny-shakespeare-train-2"),
        ("Dataset", "shakespeare-data-1")}
