"""Deployments on the test cluster: the gate, revisions rolling out by replica ratio, and deletion.

The gating Evaluation runs as the operator makes it (kwok plays its pod; the test ends it with the verdict the
workload would write). The server pods are kwok's: they are Ready as soon as they are bound, so a rollout's steps
move on their pauses (no analysis here; tests/integration/test_canary_analysis.py drives analysis with real servers).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.cluster.cluster import TestCluster
from tests.integration.conftest import BIN, Kubectl, Operators, apply, exists, finish_job_pod, get, wait_until
from tests.integration.gateway_fixtures import gateway_crds  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]
MODEL_1, MODEL_2 = "s3://models/shakespeare/run-1", "s3://models/shakespeare/run-2"
REPLICAS_ROUTER = {"LLMOPS_TRAFFIC_ROUTER": "replicas"}


def evaluation(model: str) -> dict[str, Any]:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "Evaluation", "metadata": {"name": "gate"}, "spec": {
        "model": {"uri": model}, "tasks": [{"name": "heldout", "type": "perplexity", "uri": "s3://data/heldout.txt"}],
        "thresholds": [{"task": "heldout", "metric": "perplexity", "max": 400}]}}


def llm_deployment(model: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": "chat"}, "spec": {
        "model": {"uri": model}, "gate": {"evaluation": "gate"}, "replicas": 4, **spec}}


STEPS = {"canary": {"steps": [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}]}}


def finish_evaluation(cluster: TestCluster, namespace: str, generation: int, passed: bool) -> None:
    """End the Evaluation's pod as llmops-evaluate would: exit 0, the verdict in its termination message."""
    value = 120.0 if passed else 900.0
    verdict = {"verdict": "Passed" if passed else "Failed", "results": [
        {"task": "heldout", "metric": "perplexity", "value": value, "threshold": "<= 400",
         "margin": 400 - value, "passed": passed}]}
    finish_job_pod(cluster, namespace, f"gate-eval-{generation}", json.dumps(verdict))


def status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return get(kubectl, namespace, "deployment.llmops.dev/chat").get("status") or {}


def condition(kubectl: Kubectl, namespace: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(kubectl, namespace).get("conditions", []) if c["type"] == type_), {})


def server_replicas(kubectl: Kubectl, namespace: str) -> dict[str, int]:
    items = get(kubectl, namespace, "deployments.apps")["items"]
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in items}


def serve_first_revision(cluster: TestCluster, kubectl: Kubectl, namespace: str, **spec: Any) -> None:
    apply(kubectl, namespace, evaluation(MODEL_1), llm_deployment(MODEL_1, **spec))
    wait_until("the gate waits", lambda: condition(kubectl, namespace, "Gated").get("reason")
               == "WaitingForEvaluation")
    assert not exists(kubectl, namespace, "deployment.apps/chat-r1")  # nothing serves before the verdict
    finish_evaluation(cluster, namespace, 1, passed=True)
    kubectl("wait", "--for=condition=Ready", "deployment.llmops.dev/chat", "-n", namespace, "--timeout=60s")
    assert status(kubectl, namespace)["phase"] == "Available"


def test_a_passing_model_is_served_and_a_new_revision_rolls_out_by_replica_ratio(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op", REPLICAS_ROUTER)
    serve_first_revision(cluster, kubectl, namespace, **STEPS)
    assert server_replicas(kubectl, namespace) == {"chat-r1": 4}
    entry = get(kubectl, namespace, "service/chat")["spec"]
    assert entry["selector"] == {"app.kubernetes.io/managed-by": "llmops-operator", "llmops.dev/kind": "Deployment",
                                 "llmops.dev/name": "chat", "app.kubernetes.io/component": "model-server"}
    table = kubectl("get", "llmdeploy", "chat", "-n", namespace).stdout
    assert "Available" in table and f"http://chat.{namespace}.svc:8000/v1" in table

    # A new artifact: its Evaluation runs again; until it passes, revision 1 alone serves.
    apply(kubectl, namespace, evaluation(MODEL_2), llm_deployment(MODEL_2, **STEPS))
    wait_until("the new revision waits for its gate", lambda: condition(kubectl, namespace, "Gated").get("reason")
               == "WaitingForEvaluation")
    assert server_replicas(kubectl, namespace) == {"chat-r1": 4}
    finish_evaluation(cluster, namespace, 2, passed=True)

    seen: list[dict[str, int]] = []

    def promoted() -> bool:
        now = server_replicas(kubectl, namespace)
        if not seen or seen[-1] != now:
            seen.append(now)
        return status(kubectl, namespace).get("currentRevision") == 2
    wait_until("revision 2 promoted", promoted, timeout=60)
    # 25% of 4 pods is 1 canary pod, 50% two; the stable gives up pods only as the canary's are ready.
    assert {"chat-r1": 3, "chat-r2": 1} in seen and {"chat-r1": 2, "chat-r2": 2} in seen, seen
    wait_until("revision 1 scaled down", lambda: server_replicas(kubectl, namespace) == {"chat-r2": 4}, timeout=60)
    final = status(kubectl, namespace)
    assert [(r["revision"], r["outcome"]) for r in final["history"]] == [(1, "Superseded"), (2, "Stable")]
    assert final["history"][1]["metrics"] == {"heldout/perplexity": 120.0}
    events = get(kubectl, namespace, "events")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "chat"}
    assert {"RolloutStarted", "StepReached", "StepCompleted", "Promoted"} <= reasons


def test_a_failed_evaluation_never_gets_traffic_and_the_stable_keeps_serving(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op", REPLICAS_ROUTER)
    serve_first_revision(cluster, kubectl, namespace, **STEPS)
    apply(kubectl, namespace, evaluation(MODEL_2), llm_deployment(MODEL_2, **STEPS))
    wait_until("the new Evaluation runs", lambda: exists(kubectl, namespace, "job/gate-eval-2"))
    finish_evaluation(cluster, namespace, 2, passed=False)
    wait_until("the gate says no", lambda: condition(kubectl, namespace, "Gated").get("reason") == "EvaluationFailed")
    assert "heldout/perplexity 900" in condition(kubectl, namespace, "Gated")["message"]
    wait_until("Degraded", lambda: status(kubectl, namespace).get("phase") == "Degraded")
    assert server_replicas(kubectl, namespace) == {"chat-r1": 4}  # revision 2 never had a pod
    assert condition(kubectl, namespace, "Ready")["status"] == "True"


def test_an_evaluation_of_another_model_does_not_open_the_gate(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op", REPLICAS_ROUTER)
    apply(kubectl, namespace, evaluation(MODEL_1), llm_deployment(MODEL_2))
    finish_evaluation(cluster, namespace, 1, passed=True)
    wait_until("the gate refuses", lambda: condition(kubectl, namespace, "Gated").get("reason")
               == "EvaluatedAnotherModel")
    assert MODEL_1 in condition(kubectl, namespace, "Gated")["message"]
    assert server_replicas(kubectl, namespace) == {}


def test_deleting_the_deployment_removes_its_children(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                      operators: Operators) -> None:
    operators.start("op", REPLICAS_ROUTER)
    serve_first_revision(cluster, kubectl, namespace)
    kubectl("delete", "deployment.llmops.dev/chat", "-n", namespace, "--timeout=60s")
    wait_until("children garbage-collected", lambda: not exists(kubectl, namespace, "deployment.apps/chat-r1")
               and not exists(kubectl, namespace, "service/chat") and not exists(kubectl, namespace, "service/chat-r1"))


LONG_STEPS = {"canary": {"steps": [{"weight": 25, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}}


def rollout(cluster: TestCluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "llmops"), "rollout", *args, "-n", namespace,
                             "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_pause_promote_abort_and_undo_from_the_cli(cluster: TestCluster, kubectl: Kubectl, namespace: str,
                                                  operators: Operators) -> None:
    operators.start("op", REPLICAS_ROUTER)
    serve_first_revision(cluster, kubectl, namespace, **LONG_STEPS)
    generation = get(kubectl, namespace, "deployment.llmops.dev/chat")["metadata"]["generation"]

    # spec.paused holds a rollout at its step; promote skips the remaining steps (and the hour-long pauses).
    apply(kubectl, namespace, evaluation(MODEL_2), llm_deployment(MODEL_2, paused=True, **LONG_STEPS))
    finish_evaluation(cluster, namespace, 2, passed=True)
    wait_until("the canary at step 1", lambda: (status(kubectl, namespace).get("canary") or {}).get("weight") == 25)
    assert condition(kubectl, namespace, "Progressing")["reason"] == "Paused"
    assert "step 1" in rollout(cluster, namespace, "status", "chat").stdout.lower()
    rollout(cluster, namespace, "promote", "chat")
    wait_until("revision 2 promoted", lambda: status(kubectl, namespace).get("currentRevision") == 2)

    # undo: revision 1 rolls out again (its recorded verdict reused) and serves until the spec changes.
    rollout(cluster, namespace, "undo", "chat", "--to-revision", "1")
    wait_until("revision 1 canary", lambda: (status(kubectl, namespace).get("canary") or {}).get("revision") == 1)
    assert condition(kubectl, namespace, "Gated")["reason"] == "VerdictReused"
    rollout(cluster, namespace, "promote", "chat")
    wait_until("revision 1 serves again", lambda: status(kubectl, namespace).get("currentRevision") == 1)

    # abort: the canary's traffic goes at once and it is not retried at this spec.
    rollout(cluster, namespace, "undo", "chat", "--to-revision", "2")
    wait_until("revision 2 canary", lambda: (status(kubectl, namespace).get("canary") or {}).get("revision") == 2)
    rollout(cluster, namespace, "abort", "chat")
    wait_until("aborted", lambda: status(kubectl, namespace).get("phase") == "Degraded")
    assert {r["revision"]: r["outcome"] for r in status(kubectl, namespace)["history"]}[2] == "Aborted"
    wait_until("the canary's pods gone", lambda: server_replicas(kubectl, namespace) == {"chat-r1": 4})
    # Nothing the CLI did touched the spec: GitOps sees no drift.
    final = get(kubectl, namespace, "deployment.llmops.dev/chat")
    assert final["metadata"]["generation"] == generation + 1 and final["spec"]["paused"] is True


def test_a_child_the_api_server_refuses_is_a_condition_with_its_message_not_a_hot_retry(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    # Watching only this namespace: the error counter is per kind, and an earlier test's namespace, still being
    # deleted, has refused writes (HTTP 403, namespace terminating) of its own.
    replica = operators.start("op", {**REPLICAS_ROUTER, "LLMOPS_WATCH_NAMESPACES": namespace})
    apply(kubectl, namespace, evaluation(MODEL_1),
          llm_deployment(MODEL_1, placement={"nodeSelector": {"not a label key!": "x"}}))
    finish_evaluation(cluster, namespace, 1, passed=True)
    wait_until("the refusal shown", lambda: condition(kubectl, namespace, "Ready").get("reason") == "ChildInvalid")
    message = condition(kubectl, namespace, "Ready")["message"]
    assert "HTTP 422" in message and "nodeSelector" in message
    # Events of the Evaluation, the ConfigMap and the condition's own status write each cause a reconcile (and a
    # refusal) at first; once those settle, nothing retries until the resync (a hot retry: every 2 s).
    time.sleep(4)
    before = replica.metric('llmops_reconcile_total{kind="Deployment",outcome="error"}')
    time.sleep(10)
    assert replica.metric('llmops_reconcile_total{kind="Deployment",outcome="error"}') - before <= 1


@pytest.mark.usefixtures("gateway_crds")
def test_with_the_inference_extension_each_revision_gets_a_pool_behind_one_weighted_route(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op", {"LLMOPS_TRAFFIC_ROUTER": "inferencePool",
                           "LLMOPS_GATEWAY_PARENT_REFS": '[{"name": "inference-gateway", "namespace": "gw"}]'})
    serve_first_revision(cluster, kubectl, namespace, **LONG_STEPS)
    apply(kubectl, namespace, evaluation(MODEL_2), llm_deployment(MODEL_2, **LONG_STEPS))
    finish_evaluation(cluster, namespace, 2, passed=True)

    def backends() -> dict[str, int]:
        route = get(kubectl, namespace, "httproute/chat")
        return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}
    wait_until("the canary's pool gets 25%", lambda: backends() == {"chat-r1": 75, "chat-r2": 25})
    route = get(kubectl, namespace, "httproute/chat")["spec"]
    assert route["parentRefs"][0]["name"] == "inference-gateway"  # the chart's default gateway
    assert {b["kind"] for b in route["rules"][0]["backendRefs"]} == {"InferencePool"}
    for revision in (1, 2):
        pool = get(kubectl, namespace, f"inferencepool/chat-r{revision}")["spec"]
        assert pool["selector"]["matchLabels"]["llmops.dev/revision"] == str(revision)
        assert pool["endpointPickerRef"]["name"] == f"chat-r{revision}-epp"
        assert exists(kubectl, namespace, f"deployment.apps/chat-r{revision}-epp")
    assert status(kubectl, namespace)["traffic"] == "inferencePool"


def test_canary_pods_that_never_become_ready_fail_the_rollout_with_their_cause(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    operators.start("op", REPLICAS_ROUTER)
    serve_first_revision(cluster, kubectl, namespace, **STEPS, progressDeadline="6s")
    apply(kubectl, namespace, evaluation(MODEL_2), llm_deployment(MODEL_2, **STEPS, progressDeadline="6s"))
    finish_evaluation(cluster, namespace, 2, passed=True)
    ((pod, _),) = cluster.wait_for_pod_ips(namespace, "llmops.dev/revision=2", 1).items()
    cluster.set_pod_ready(namespace, pod, False, reason="ModelLoadFailed", message="no config.json in /models")
    wait_until("the rollout failed", lambda: status(kubectl, namespace).get("phase") == "Degraded", timeout=60)
    degraded = condition(kubectl, namespace, "Degraded")
    assert degraded["reason"] == "Failed" and "exited with code 78" in degraded["message"]
    assert "model failed to load: no config.json in /models" in degraded["message"]
    wait_until("the canary's pods gone", lambda: server_replicas(kubectl, namespace) == {"chat-r1": 4})
    assert condition(kubectl, namespace, "Ready")["status"] == "True"  # revision 1 kept serving
