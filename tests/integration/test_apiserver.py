"""The generated CRDs on a real kube-apiserver: installed, accepting the examples, rejecting mistakes.

These are the same bad manifests the offline checker rejects (tests/bad_manifests.py), so this also
proves that `llmops validate` and the cluster agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.bad_manifests import BAD_CASES, BadCase
from tests.conftest import EXAMPLES, example, patched
from tests.integration.conftest import Kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("crds")]


def apply(kubectl: Kubectl, namespace: str, *manifests: dict, check: bool = True, dry_run: bool = False):
    args = ["apply", "--server-side", "--field-manager=llmops-tests", "-n", namespace, "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return kubectl(*args, input=yaml.safe_dump_all(list(manifests)), check=check)


def test_crds_are_established_with_names_and_categories(kubectl: Kubectl) -> None:
    crds = json.loads(kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=llmops-operator", "-o", "json").stdout)
    names = {item["metadata"]["name"] for item in crds["items"]}
    assert names == {f"{plural}.llmops.dev" for plural in
                     ("datasets", "pretrainjobs", "finetunes", "evaluations", "deployments")}
    for item in crds["items"]:
        conditions = {c["type"]: c["status"] for c in item["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"


def test_every_example_is_accepted_and_listed_by_category(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "--server-side", "--field-manager=llmops-tests", "-n", namespace, "-f", str(EXAMPLES))
    listed = kubectl("get", "llmops", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == sorted([
        "dataset.llmops.dev/shakespeare", "pretrainjob.llmops.dev/tiny-shakespeare",
        "finetune.llmops.dev/tiny-shakespeare-lora", "evaluation.llmops.dev/tiny-shakespeare-lora",
        "finetune.llmops.dev/tiny-shakespeare-int8", "evaluation.llmops.dev/tiny-shakespeare-int8",
        "deployment.llmops.dev/tiny-shakespeare"])
    # Our Deployment kind is reachable by its full name and short name; plain `deployments` is apps/v1.
    assert kubectl("get", "deployments.llmops.dev", "-n", namespace, "-o", "name").stdout.strip()
    assert kubectl("get", "llmdeploy", "-n", namespace, "-o", "name").stdout.strip()
    assert not kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout.strip()


def test_the_specialization_manifests_are_accepted_with_the_defaults_offline_admission_applies(
        kubectl: Kubectl, namespace: str) -> None:
    """A budget-sized PretrainJob, a continuation with RoPE-scaled context, distill, prune, quantize and reward
    FineTunes, an Evaluation with a judge: the API server stores each as offline admission admits it."""
    from llmops.operator.api.admission import admit

    folder = Path(__file__).parent.parent / "e2e" / "specialization"
    kubectl("apply", "--server-side", "--field-manager=llmops-tests", "-n", namespace, "-f", str(folder))
    for path in sorted(folder.glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        stored = json.loads(kubectl("get", f"{manifest['kind'].lower()}.llmops.dev/{manifest['metadata']['name']}",
                                    "-n", namespace, "-o", "json").stdout)
        assert stored["spec"] == admit(manifest)["spec"], path.name


def test_api_server_applies_the_same_defaults_as_offline_admission(kubectl: Kubectl, namespace: str) -> None:
    from llmops.operator.api.admission import admit

    for kind in ("Dataset", "PretrainJob", "FineTune", "Evaluation", "Deployment"):
        manifest = example(kind)
        apply(kubectl, namespace, manifest)
        stored = json.loads(kubectl("get", f"{kind.lower()}.llmops.dev/{manifest['metadata']['name']}",
                                    "-n", namespace, "-o", "json").stdout)
        assert stored["spec"] == admit(manifest)["spec"], kind


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_bad_manifest_is_rejected_by_the_api_server_naming_the_field(
        kubectl: Kubectl, namespace: str, case: BadCase) -> None:
    result = apply(kubectl, namespace, case.manifest(), check=False, dry_run=True)
    assert result.returncode != 0, f"the API server accepted {case.id}"
    assert case.want_path in result.stderr, result.stderr


def test_immutable_fields_are_enforced_on_update(kubectl: Kubectl, namespace: str) -> None:
    job = example("PretrainJob")
    apply(kubectl, namespace, job)
    result = apply(kubectl, namespace, patched(job, {"spec": {"model": {"numLayers": 8}}}), check=False)
    assert result.returncode != 0
    assert "spec.model" in result.stderr and "cannot change after creation" in result.stderr
    apply(kubectl, namespace, patched(job, {"spec": {"training": {"maxSteps": 400}}}))  # mutable: fine


def test_status_subresource_and_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    job = example("PretrainJob")
    apply(kubectl, namespace, job)
    status = {"status": {"phase": "Running", "progress": {"completed": 50, "total": 200, "percent": "25%"},
                         "metrics": {"step": 50, "loss": 3.25}}}
    kubectl("patch", "pretrainjob.llmops.dev/tiny-shakespeare", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps(status))
    table = kubectl("get", "ptj", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "PHASE", "PROGRESS", "LOSS", "AGE"]
    assert table[1].split()[:4] == ["tiny-shakespeare", "Running", "25%", "3.25"]
    # A spec write through the main resource cannot change status.
    again = json.loads(kubectl("get", "ptj/tiny-shakespeare", "-n", namespace, "-o", "json").stdout)
    assert again["status"]["phase"] == "Running"
