"""The operator process on a real API server, with only the permissions the Helm chart grants."""

from __future__ import annotations

import signal
import time

import pytest
import yaml

from tests.cluster.cluster import ApiError, TestCluster
from tests.conftest import example, patched
from tests.integration.conftest import Kubectl, Operators, Replica, apply, exists, get, http_get, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]


def test_the_chart_rbac_lets_the_operator_lead_and_a_standby_take_over(
        kubectl: Kubectl, operators: Operators) -> None:
    first = operators.start("replica-a")
    wait_until("replica-a to lead", lambda: first.ready() == "leader")
    assert operators.lease_holder(kubectl) == "replica-a"
    assert first.metric("llmops_leader") == 1.0
    assert http_get(first.health, "/healthz")[0] == 200

    second = operators.start("replica-b")
    wait_until("replica-b to stand by", lambda: second.ready() == "standby")
    time.sleep(3)  # a standby never grabs a live lease
    assert operators.lease_holder(kubectl) == "replica-a" and second.metric("llmops_leader") == 0.0

    # Graceful shutdown releases the lease, so the standby takes over without waiting for expiry.
    started = time.monotonic()
    assert first.stop() == 0
    wait_until("replica-b to lead", lambda: second.ready() == "leader", timeout=15)
    assert operators.lease_holder(kubectl) == "replica-b"
    assert time.monotonic() - started < 10
    assert second.stop() == 0


def test_a_killed_leader_is_replaced_after_its_lease_expires(
        kubectl: Kubectl, operators: Operators) -> None:
    first = operators.start("replica-c")
    wait_until("replica-c to lead", lambda: first.ready() == "leader")
    second = operators.start("replica-d")
    wait_until("replica-d to stand by", lambda: second.ready() == "standby")
    first.stop(signal.SIGKILL)  # no release: the lease must expire (6 s here)
    wait_until("replica-d to lead", lambda: second.ready() == "leader", timeout=30)
    assert operators.lease_holder(kubectl) == "replica-d"


def refusing_webhook(namespace: str) -> dict:
    """An admission webhook that fails closed and cannot be reached: the API server answers every write of the
    operator's children in `namespace` with HTTP 500 ("failed calling webhook"), as while a webhook's pods restart."""
    rules = [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": [plural]}
             for group, plural in (("", "configmaps"), ("batch", "jobs"))]
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"unreachable-{namespace}"},
            "webhooks": [{"name": "unreachable.llmops.test", "clientConfig": {"url": "https://127.0.0.1:1/validate"},
                          "rules": rules, "failurePolicy": "Fail", "sideEffects": "None",
                          "admissionReviewVersions": ["v1"], "timeoutSeconds": 2,
                          "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                          "objectSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "llmops-operator"}}}]}


def counter(replica: Replica, sample: str) -> float:
    """A counter's value, 0 before its first increment (prometheus_client exports a label set only then)."""
    try:
        return replica.metric(sample)
    except AssertionError:
        return 0.0


def test_a_server_error_is_retried_with_backoff_without_waiting_for_an_event(
        cluster: TestCluster, kubectl: Kubectl, namespace: str, operators: Operators) -> None:
    webhook = refusing_webhook(namespace)
    kubectl("apply", "--server-side", "--field-manager=llmops-tests", "-f", "-", input=yaml.safe_dump(webhook))
    try:
        probe = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "probe", "labels": {"app.kubernetes.io/managed-by": "llmops-operator"}}}

        def refused_with_500() -> bool:
            try:
                cluster.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", probe)
            except ApiError as error:
                return error.status == 500 and "failed calling webhook" in error.body
            cluster.request("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/probe")
            return False

        wait_until("the webhook in force", refused_with_500)
        replica = operators.start("op", {"LLMOPS_WATCH_NAMESPACES": namespace})
        apply(kubectl, namespace, patched(example("Dataset"), {"metadata": {"name": "blocked"}}))
        retries = 'llmops_reconcile_total{kind="Dataset",outcome="retry"}'
        wait_until("three retries", lambda: counter(replica, retries) >= 3, timeout=30)  # after ~1 s, 2 s more
        assert not exists(kubectl, namespace, "job/blocked-data-1")
        # Passing by itself, it is no refusal: no condition says the write was refused.
        conditions = get(kubectl, namespace, "dataset.llmops.dev/blocked").get("status", {}).get("conditions", [])
        assert not [c for c in conditions if c["reason"].startswith("Child")]
    finally:
        kubectl("delete", "validatingwebhookconfiguration", webhook["metadata"]["name"], check=False)
    # Nothing about the Dataset changes from here on (no status was written): only the operator's own retry,
    # 4 or 8 s later, can create the Job, well before the minute of the resync.
    wait_until("the Job created by a retry", lambda: exists(kubectl, namespace, "job/blocked-data-1"), timeout=20)
    wait_until("Running", lambda: get(kubectl, namespace, "dataset.llmops.dev/blocked")
               .get("status", {}).get("phase") == "Running", timeout=45)
    assert counter(replica, 'llmops_reconcile_total{kind="Dataset",outcome="error"}') == 0
