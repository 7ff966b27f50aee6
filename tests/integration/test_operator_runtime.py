"""The operator process on a real API server, with only the permissions the Helm chart grants."""

from __future__ import annotations

import signal
import time

import pytest

from tests.integration.conftest import Kubectl, Operators, http_get, wait_until

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
