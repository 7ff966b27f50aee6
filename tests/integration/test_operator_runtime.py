"""The operator process on a real API server, with only the permissions the Helm chart grants."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import TestCluster
from tests.conftest import ROOT
from tests.integration.conftest import BIN, Kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]

RELEASE_NAMESPACE = "llmops-system"
SERVICE_ACCOUNT = "llmops-llmops-operator"  # helm release "llmops" of chart "llmops-operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], bool], timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Replica:
    """One `llmops operator run` process, as the chart would run it, authenticated as the chart's SA."""

    def __init__(self, name: str, kubeconfig: Path, log_dir: Path):
        self.name, self.health, self.metrics = name, free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LLMOPS_POD_NAME": name,
               "LLMOPS_LEASE_NAMESPACE": RELEASE_NAMESPACE, "LLMOPS_LEASE_DURATION_SECONDS": "6",
               "LLMOPS_HEALTH_PORT": str(self.health), "LLMOPS_METRICS_PORT": str(self.metrics)}
        self.log = log_dir / f"{name}.log"
        self.process = subprocess.Popen([str(BIN / "llmops"), "operator", "run"], env=env,
                                        stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def ready(self) -> str:
        return http_get(self.health, "/readyz")[1]

    def metric(self, name: str) -> float:
        for line in http_get(self.metrics, "/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not exported")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture(scope="module")
def chart_service_account(cluster: TestCluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the chart into the cluster and return a kubeconfig for its ServiceAccount."""
    helm = subprocess.run(
        [str(BIN / "helm"), "install", "llmops", str(ROOT / "charts" / "llmops-operator"), "--kubeconfig",
         str(cluster.kubeconfig), "--namespace", RELEASE_NAMESPACE, "--create-namespace", "--skip-crds",
         "--set", "replicaCount=0", "--wait", "--timeout", "60s"],
        capture_output=True, text=True, timeout=120)
    assert helm.returncode == 0, helm.stderr
    return cluster.service_account_kubeconfig(RELEASE_NAMESPACE, SERVICE_ACCOUNT, create=False,
                                              path=tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture
def replicas(chart_service_account: Path, tmp_path: Path) -> Iterator[Callable[[str], Replica]]:
    started: list[Replica] = []

    def start(name: str) -> Replica:
        replica = Replica(name, chart_service_account, tmp_path)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop(signal.SIGKILL)
    for replica in started:  # show what the operator said when a test failed
        sys.stderr.write(f"--- {replica.name} ---\n{replica.log.read_text()[-3000:]}\n")


def lease_holder(kubectl: Kubectl) -> str | None:
    result = kubectl("get", "lease", "llmops-operator", "-n", RELEASE_NAMESPACE, "-o", "json", check=False)
    return json.loads(result.stdout)["spec"].get("holderIdentity") if result.returncode == 0 else None


def test_the_chart_rbac_lets_the_operator_lead_and_a_standby_take_over(
        kubectl: Kubectl, replicas: Callable[[str], Replica]) -> None:
    first = replicas("replica-a")
    wait_until("replica-a to lead", lambda: first.ready() == "leader")
    assert lease_holder(kubectl) == "replica-a"
    assert first.metric("llmops_leader") == 1.0
    assert http_get(first.health, "/healthz")[0] == 200

    second = replicas("replica-b")
    wait_until("replica-b to stand by", lambda: second.ready() == "standby")
    time.sleep(3)  # a standby never grabs a live lease
    assert lease_holder(kubectl) == "replica-a" and second.metric("llmops_leader") == 0.0

    # Graceful shutdown releases the lease, so the standby takes over without waiting for expiry.
    started = time.monotonic()
    assert first.stop() == 0
    wait_until("replica-b to lead", lambda: second.ready() == "leader", timeout=15)
    assert lease_holder(kubectl) == "replica-b"
    assert time.monotonic() - started < 10
    assert second.stop() == 0


def test_a_killed_leader_is_replaced_after_its_lease_expires(
        kubectl: Kubectl, replicas: Callable[[str], Replica]) -> None:
    first = replicas("replica-c")
    wait_until("replica-c to lead", lambda: first.ready() == "leader")
    second = replicas("replica-d")
    wait_until("replica-d to stand by", lambda: second.ready() == "standby")
    first.stop(signal.SIGKILL)  # no release: the lease must expire (6 s here)
    wait_until("replica-d to lead", lambda: second.ready() == "leader", timeout=30)
    assert lease_holder(kubectl) == "replica-d"
