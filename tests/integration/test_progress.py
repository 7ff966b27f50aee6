"""Live progress on the test cluster: the operator reads the rank-0 pod's log (kwok serves it as a kubelet
would) and the printer columns Progress and Loss move while the workload runs."""

from __future__ import annotations

import json
import time

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import DELETE, example, patched
from tests.integration.conftest import Kubectl, Operators, apply, get, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]

GPU_POOL = {"nodes": 2, "gpusPerNode": 8, "nodeSelector": {"llmops.dev/pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
PTJ = "ptj/tiny-shakespeare"
INTERVAL = "1"  # seconds between progress reads in these tests (15 by default)


def train_line(step: int, loss: float, at: float) -> str:
    """One report as trainer/train/metrics.py prints it (rank 0, one JSON object per line)."""
    return json.dumps({"event": "train", "time": at, "step": step, "totalSteps": 200, "loss": loss,
                       "learningRate": 0.001, "gradNorm": 0.8, "tokensPerSecond": 4096.0,
                       "tokensSeen": step * 2048, "etaSeconds": (200 - step) // 2})


def running_pods(cluster: TestCluster, namespace: str, job: str) -> dict[str, str]:
    """Completion index -> name of the Running pods of an Indexed Job."""
    pods = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name={job}")["items"]
    return {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p["metadata"]["name"]
            for p in pods if p["status"].get("phase") == "Running"}


def columns(kubectl: Kubectl, namespace: str, what: str) -> dict[str, str]:
    """The row of `kubectl get` for one resource, by column header."""
    header, row = kubectl("get", what, "-n", namespace).stdout.splitlines()[:2]
    return dict(zip(header.split(), row.split(), strict=False))


def shows(kubectl: Kubectl, namespace: str, what: str, **want: str) -> bool:
    row = columns(kubectl, namespace, what)
    return all(row.get(column.upper()) == value for column, value in want.items())


def test_kwok_serves_pod_logs_through_the_api_server(cluster: TestCluster, kubectl: Kubectl, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "printer", "namespace": namespace},
           "spec": {"containers": [{"name": "main", "image": "busybox"}], "nodeSelector": {"llmops.dev/pool": "cpu"}}}
    cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    wait_until("pod Running", lambda: cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/printer")
               ["status"].get("phase") == "Running")
    silent = kubectl("logs", "printer", "-n", namespace, check=False)
    assert silent.returncode != 0 and "no logs found" in silent.stderr  # kwok's answer for a pod with no Logs
    cluster.set_pod_log(namespace, "printer", ["one", "two", "three"])
    wait_until("the log", timeout=20,
               check=lambda: kubectl("logs", "printer", "-n", namespace, check=False).stdout == "one\ntwo\nthree\n")
    assert kubectl("logs", "printer", "-n", namespace, "--tail=1").stdout == "three\n"
    cluster.set_pod_log(namespace, "printer", ["one", "two", "three", "four"])
    assert kubectl("logs", "printer", "-n", namespace, "--tail=2").stdout == "three\nfour\n"


def test_progress_and_loss_columns_follow_the_rank_zero_log(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                             operators: Operators) -> None:
    replica = operators.start("op", env={"LLMOPS_PROGRESS_INTERVAL_SECONDS": INTERVAL})
    manifest = patched(example("PretrainJob"), {"spec": {"data": {"dataset": DELETE, "uri": "s3://bucket/shards"},
                                                         "nodePool": GPU_POOL}})
    apply(kubectl, namespace, manifest)
    job = "tiny-shakespeare-train-1"
    wait_until("both training pods Running", lambda: len(running_pods(cluster, namespace, job)) == 2, timeout=60)
    wait_until("PretrainJob Running", lambda: shows(kubectl, namespace, PTJ, phase="Running"))
    pods = running_pods(cluster, namespace, job)
    # The other rank prints too (torchrun's noise, or a report of its own): only rank 0 is read.
    cluster.set_pod_log(namespace, pods["1"], [train_line(150, 9.99, 1000.0)])
    started = time.monotonic()
    cluster.set_pod_log(namespace, pods["0"], ["[rank0] starting torchrun", train_line(60, 3.5, 1000.0),
                                               train_line(80, 3.25, 1010.0), '{"event": "train", "step": 9'])
    wait_until("40% and the loss in the columns", lambda: shows(kubectl, namespace, PTJ, progress="40%", loss="3.25"),
               timeout=30)
    assert time.monotonic() - started < 30
    status = get(kubectl, namespace, PTJ)["status"]
    assert status["progress"] == {"completed": 80, "total": 200, "unit": "steps", "percent": "40%", "rate": 2.0,
                                  "etaSeconds": 60}
    assert status["metrics"]["tokensPerSecond"] == 4096.0 and status["metrics"]["step"] == 80

    # Nothing new in the log: several reads later the status has not been written again (no write per tick).
    version = get(kubectl, namespace, PTJ)["metadata"]["resourceVersion"]
    time.sleep(4 * float(INTERVAL))
    assert get(kubectl, namespace, PTJ)["metadata"]["resourceVersion"] == version

    cluster.set_pod_log(namespace, pods["0"], [train_line(80, 3.25, 1010.0), train_line(120, 2.5, 1030.0)])
    wait_until("a later report moves the columns", lambda: shows(kubectl, namespace, PTJ, progress="60%", loss="2.5"),
               timeout=30)

    # The last report and the end of the run come together; the final loss is still shown.
    cluster.set_pod_log(namespace, pods["0"], [train_line(120, 2.5, 1030.0), train_line(200, 2.25, 1070.0)])
    for name in pods.values():
        cluster.finish_pod(namespace, name, exit_code=0)
    kubectl("wait", "--for=condition=Succeeded", PTJ, "-n", namespace,
            "--timeout=60s")
    wait_until("100% once Succeeded", lambda: shows(kubectl, namespace, PTJ, phase="Succeeded", progress="100%",
                                                    loss="2.25"))
    status = get(kubectl, namespace, PTJ)["status"]
    assert status["progress"]["completed"] == status["progress"]["total"] == 200
    assert status["metrics"]["loss"] == 2.25 and status["metrics"]["step"] == 200
    assert replica.process.poll() is None


def test_a_dataset_shows_the_stage_it_is_in(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                            operators: Operators) -> None:
    operators.start("op", env={"LLMOPS_PROGRESS_INTERVAL_SECONDS": INTERVAL})
    apply(kubectl, namespace, example("Dataset"))
    wait_until("the data pod Running", lambda: "0" in running_pods(cluster, namespace, "shakespeare-data-1"),
               timeout=60)
    pod = running_pods(cluster, namespace, "shakespeare-data-1")["0"]
    # What trainer/data/progress.py prints, stage by stage.
    lines = [json.dumps({"event": "progress", "stage": "read", "completed": 800, "total": None, "unit": "documents",
                         "rate": 400.0, "elapsedSeconds": 2.0}),
             json.dumps({"event": "progress", "stage": "clean", "completed": 600, "total": 800,
                         "unit": "documents", "rate": 200.0, "elapsedSeconds": 3.0})]
    cluster.set_pod_log(namespace, pod, lines)
    wait_until("75% in the Progress column", lambda: shows(kubectl, namespace, "llmds/shakespeare", progress="75%"),
               timeout=30)
    progress = get(kubectl, namespace, "llmds/shakespeare")["status"]["progress"]
    assert progress == {"completed": 600, "total": 800, "unit": "documents (clean)", "percent": "75%",
                        "rate": 200.0, "etaSeconds": 1}
    cluster.finish_pod(namespace, pod, exit_code=0)
    wait_until("Succeeded at 100%", lambda: shows(kubectl, namespace, "llmds/shakespeare", phase="Succeeded",
                                                  progress="100%"))
