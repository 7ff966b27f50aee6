"""A ResourceQuota that refuses a workload's pods shows in the resource's status, and clears when it is raised.

The real API server enforces the quota (ResourceQuota admission, the controller-manager's resourcequota controller
keeps its usage); the Job controller records FailedCreate Events on the Job, which the operator reads.
"""

from __future__ import annotations

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import example, patched
from tests.integration.conftest import Kubectl, Operators, apply, get, phase, running_pod, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]
QUOTA = "no-more-pods"


def conditions(kubectl: Kubectl, namespace: str, name: str) -> dict[str, dict]:
    status = get(kubectl, namespace, f"dataset.llmops.dev/{name}").get("status", {})
    return {c["type"]: c for c in status.get("conditions", [])}


def test_a_quota_refusal_is_a_condition_that_names_the_quota_and_clears_when_raised(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": QUOTA},
             "spec": {"hard": {"pods": "0"}}}
    apply(kubectl, namespace, quota)
    # Admission refuses every pod until the quota controller has filled in the quota's status.
    wait_until("quota computed", lambda: get(kubectl, namespace, f"resourcequota/{QUOTA}")
               .get("status", {}).get("hard", {}).get("pods") == "0")
    operators.start("op")
    apply(kubectl, namespace, patched(example("Dataset"), {"metadata": {"name": "capped"}}))

    wait_until("QuotaExceeded", lambda: conditions(kubectl, namespace, "capped").get("Ready", {}).get("reason")
               == "QuotaExceeded", timeout=60)
    ready = conditions(kubectl, namespace, "capped")["Ready"]
    assert ready["status"] == "False"
    assert f"exceeded quota: {QUOTA}" in ready["message"] and "limited: pods=0" in ready["message"]
    assert ready["message"].startswith("Job capped-data-1 cannot create its pods")
    assert conditions(kubectl, namespace, "capped")["Progressing"]["status"] == "False"
    assert phase(kubectl, namespace, "capped") == "Pending"
    assert not get(kubectl, namespace, "pods")["items"]
    warnings = [e for e in get(kubectl, namespace, "events")["items"]
                if e["involvedObject"]["kind"] == "Dataset" and e["reason"] == "QuotaExceeded"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"

    kubectl("patch", "resourcequota", QUOTA, "-n", namespace, "--type=merge", "-p", '{"spec":{"hard":{"pods":"5"}}}')
    # The Job controller retries with a growing delay (at most a minute); then the pod runs and the condition goes.
    wait_until("pod created", lambda: bool(get(kubectl, namespace, "pods")["items"]), timeout=90)
    running_pod(cluster, namespace, "capped-data-1")
    wait_until("Dataset Running", lambda: phase(kubectl, namespace, "capped") == "Running", timeout=90)
    now = conditions(kubectl, namespace, "capped")
    assert not [c for c in now.values() if c["reason"] == "QuotaExceeded"]
    assert now["Progressing"]["status"] == "True"
