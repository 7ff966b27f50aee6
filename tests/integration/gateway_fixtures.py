"""Gateway API (standard channel) and InferencePool (inference.networking.k8s.io/v1) CRDs on the test cluster.

The CRDs come from the published Go modules sigs.k8s.io/gateway-api and sigs.k8s.io/gateway-api-inference-extension
(hack/fetch-gateway-crds.sh, cached in ~/.cache/llmops/crds). Import the fixture where it is used (conftest.py or a
test module): ``from tests.integration.gateway_fixtures import gateway_crds``.

Once installed, the cluster serves HTTPRoute and InferencePool to every later test of the session: no controller acts
on them (there is no gateway), so they are only stored and validated, as the Deployment reconciler's tests need.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.conftest import Kubectl

FETCH_SCRIPT = ROOT / "hack" / "fetch-gateway-crds.sh"


def gateway_crd_dirs() -> list[Path]:
    """The cached CRD directories (fetched on first use, a few seconds; then a stamp check)."""
    out = subprocess.run(["bash", str(FETCH_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True, timeout=300)
    return [Path(line) for line in out.stdout.splitlines() if line.strip()]


def crd_names(dirs: list[Path]) -> list[str]:
    return sorted(yaml.safe_load(f.read_text())["metadata"]["name"] for d in dirs for f in sorted(d.glob("*.yaml")))


@pytest.fixture(scope="session")
def gateway_crds(kubectl: Kubectl) -> list[str]:
    """Gateway API's GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant and the InferencePool CRD,
    applied server-side and Established. Returns the CRD names."""
    dirs = gateway_crd_dirs()
    kubectl("apply", "--server-side", "--field-manager=llmops-tests", *(a for d in dirs for a in ("-f", str(d))))
    names = crd_names(dirs)
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in names))
    return names
