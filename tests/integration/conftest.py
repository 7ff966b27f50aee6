"""A real control plane (tests/cluster) shared by every test that asks for it, started once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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
