"""A Dataset applied to a real API server becomes a Job, and the Job's fate becomes the Dataset's status.

The operator runs as a process with the Helm chart's ServiceAccount; kwok plays the nodes, and tests end
pods with chosen exit codes.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from llmops.trainer.config import exit_codes
from llmops.trainer.config.manifest import DatasetStats
from llmops.trainer.config.result import WorkloadResult
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
    running_pod,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]


def dataset(name: str) -> dict:
    return patched(example("Dataset"), {"metadata": {"name": name}})


def test_dataset_runs_as_a_job_and_succeeds(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                            operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, dataset("corpus"))
    wait_until("Dataset Running", lambda: phase(kubectl, namespace, "corpus") == "Running")

    job = get(kubectl, namespace, "job/corpus-data-1")
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Dataset", "corpus", True)
    assert job["metadata"]["labels"]["llmops.dev/kind"] == "Dataset"
    config = json.loads(get(kubectl, namespace, "configmap/corpus-data-1")["data"]["config.json"])
    assert config["sources"][0]["uri"] == "builtin://shakespeare"
    assert config["outputUri"] == f"{ARTIFACT_ROOT}/{namespace}/datasets/corpus"
    table = kubectl("get", "llmds", "-n", namespace).stdout
    assert "Running" in table

    cluster.finish_pod(namespace, running_pod(cluster, namespace, "corpus-data-1"), exit_code=0)
    kubectl("wait", "--for=condition=Succeeded", "dataset.llmops.dev/corpus", "-n", namespace, "--timeout=45s")
    status = get(kubectl, namespace, "dataset.llmops.dev/corpus")["status"]
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == 1
    assert status["artifactUri"] == f"{ARTIFACT_ROOT}/{namespace}/datasets/corpus"
    reasons = {e["reason"] for e in get(kubectl, namespace, "events")["items"]
               if e["involvedObject"]["kind"] == "Dataset"}
    assert {"Running", "Completed"} <= reasons


def test_a_finished_run_goes_from_running_to_succeeded_and_shows_what_it_reported(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    """Since Kubernetes 1.31 a finished Job says SuccessCriteriaMet before Complete, with no ready pod in between:
    the Dataset must not step back to Pending then. The counts the workload reports reach the printer columns."""
    operators.start("op")
    apply(kubectl, namespace, dataset("counted"))
    wait_until("Dataset Running", lambda: phase(kubectl, namespace, "counted") == "Running")
    out = f"{ARTIFACT_ROOT}/{namespace}/datasets/counted"
    result = WorkloadResult(artifact_uri=out, tokenizer_uri=f"{out}/tokenizer.json", stats=DatasetStats(
        documents_read=1500, documents_kept=1234, tokens=56789, vocab_size=2048))
    finish_job_pod(cluster, namespace, "counted-data-1", result.to_message())
    wait_until("counts in status", lambda: (get(kubectl, namespace, "dataset.llmops.dev/counted")["status"]
                                            .get("stats") or {}).get("tokens") == 56789)
    status = get(kubectl, namespace, "dataset.llmops.dev/counted")["status"]
    assert status["phase"] == "Succeeded" and status["tokenizerUri"] == f"{out}/tokenizer.json"
    assert status["stats"]["vocabSize"] == 2048

    header, row = kubectl("get", "llmds", "counted", "-n", namespace).stdout.splitlines()
    cell = {name: row[header.index(name):].split()[0] for name in ("PHASE", "DOCUMENTS", "TOKENS")}
    assert cell == {"PHASE": "Succeeded", "DOCUMENTS": "1234", "TOKENS": "56789"}
    events = [e for e in get(kubectl, namespace, "events")["items"]
              if e["involvedObject"]["kind"] == "Dataset" and e["involvedObject"]["name"] == "counted"]
    said = {reason: sum(e.get("count") or 1 for e in events if e["reason"] == reason)
            for reason in ("PodsPending", "Running", "Completed")}
    assert said["Running"] == 1 and said["Completed"] == 1 and said["PodsPending"] <= 1, said


def test_a_streaming_dataset_gets_a_scratch_volume_as_its_tmpdir(kubectl: Kubectl, namespace: str,
                                                                  operators: Operators) -> None:
    """For a corpus larger than the pod's memory: the workload streams, and spills to a sized emptyDir."""
    operators.start("op")
    execution = {"streaming": {"enabled": True, "blockDocuments": 1024}, "scratchSizeLimit": "20Gi",
                 "resources": {"limits": {"memory": "2Gi"}}}
    apply(kubectl, namespace, patched(dataset("big"), {"spec": {"execution": execution}}))
    wait_until("Job created", lambda: exists(kubectl, namespace, "job/big-data-1"))
    config = json.loads(get(kubectl, namespace, "configmap/big-data-1")["data"]["config.json"])
    assert config["streaming"] == {"enabled": True, "blockDocuments": 1024, "partitions": 16}  # default filled in
    pod = get(kubectl, namespace, "job/big-data-1")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}} in pod["volumes"]
    assert {"name": "scratch", "mountPath": "/scratch"} in container["volumeMounts"]
    assert {"name": "TMPDIR", "value": "/scratch"} in container["env"]
    wait_until("Dataset Running", lambda: phase(kubectl, namespace, "big") == "Running")


def test_a_config_error_fails_at_once_with_the_reason(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                      operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, dataset("broken"))
    pod = running_pod(cluster, namespace, "broken-data-1")
    cluster.finish_pod(namespace, pod, exit_code=exit_codes.CONFIG_ERROR)
    kubectl("wait", "--for=condition=Failed", "dataset.llmops.dev/broken", "-n", namespace, "--timeout=45s")
    status = get(kubectl, namespace, "dataset.llmops.dev/broken")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ConfigError"  # from the exit code; the Job itself says PodFailurePolicy
    assert "exited with code 78" in failed["message"]
    assert status["restarts"] == 1  # no retry was made


def test_a_new_generation_replaces_the_run_and_deletion_cascades(kubectl: Kubectl, namespace: str,
                                                                 operators: Operators) -> None:
    operators.start("op")
    apply(kubectl, namespace, dataset("evolving"))
    wait_until("first run", lambda: exists(kubectl, namespace, "job/evolving-data-1"))
    apply(kubectl, namespace, patched(dataset("evolving"), {"spec": {"tokenizer": {"train": {"vocabSize": 4096}}}}))
    wait_until("second run", lambda: exists(kubectl, namespace, "job/evolving-data-2"))
    wait_until("stale run deleted", lambda: not exists(kubectl, namespace, "job/evolving-data-1"))

    kubectl("delete", "dataset.llmops.dev/evolving", "-n", namespace)
    wait_until("children garbage-collected", lambda: not get(kubectl, namespace, "jobs")["items"]
               and not [c for c in get(kubectl, namespace, "configmaps")["items"]
                        if c["metadata"]["name"].startswith("evolving")])


def test_an_operator_killed_mid_reconcile_converges_without_duplicates(
        kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    names = [f"ds-{i}" for i in range(6)]
    first = operators.start("op-1")
    wait_until("leader", lambda: first.ready() == "leader")
    apply(kubectl, namespace, *(dataset(n) for n in names))
    time.sleep(0.5)  # some reconciles done, some in flight
    first.stop(signal.SIGKILL)

    operators.start("op-2")  # takes over once the killed leader's lease expires
    wait_until("all Datasets Running",
               lambda: all(phase(kubectl, namespace, n) == "Running" for n in names), timeout=60)
    jobs = sorted(j["metadata"]["name"] for j in get(kubectl, namespace, "jobs")["items"])
    maps = sorted(c["metadata"]["name"] for c in get(kubectl, namespace, "configmaps")["items"]
                  if c["metadata"]["name"].startswith("ds-"))
    assert jobs == maps == [f"{n}-data-1" for n in names]
