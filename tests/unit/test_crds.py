"""The CRDs are generated from the models, are structural, and read well in kubectl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.operator.api.crds import crd
from llmops.operator.api.generated import generated_files, stale_files
from llmops.operator.api.v1alpha1 import KINDS
from llmops.trainer.config import cel

CRDS = {kind: crd(resource) for kind, resource in KINDS.items()}

# Short names kubectl already gives built-in kinds; ours must not shadow them.
BUILTIN_SHORT_NAMES = {"cm", "cs", "csr", "ds", "deploy", "ep", "ev", "hpa", "ing", "limits", "netpol", "no",
                       "ns", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs", "sa", "sc", "sts", "svc"}


def walk(node: dict[str, Any], path: str = "") -> Any:
    """Every schema node with its path."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def root_schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_generated_files_are_up_to_date(root: Path) -> None:
    stale = stale_files(root)
    assert not stale, f"run `make generate` (or `llmops generate`): stale {stale}"


def test_chart_carries_the_same_crds(root: Path) -> None:
    for name in (root / "crds").glob("*.yaml"):
        assert (root / "charts/llmops-operator/crds" / name.name).read_text() == name.read_text()
    assert {p.name for p in (root / "crds").glob("*.yaml")} == {
        p.name for p in generated_files() if p.parts[0] == "crds"}


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        assert "$ref" not in node and "allOf" not in node, path
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{kind}{path} has no type"
        assert node.get("additionalProperties") is not False, path
        assert not node.get("uniqueItems"), path
        if "anyOf" in node:  # only int-or-string may use anyOf, and without types on the node itself
            assert node.get("x-kubernetes-int-or-string") and "type" not in node, path


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_documented(kind: str) -> None:
    for path, node in walk(root_schema(kind)["properties"]["spec"], "spec"):
        if not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{kind} {path} has no description"


@pytest.mark.parametrize("kind", KINDS)
def test_field_descriptions_are_one_paragraph_for_kubectl_explain_to_wrap(kind: str) -> None:
    for path, node in walk(root_schema(kind)):
        description = node.get("description", "")
        assert "\n" not in description and "  " not in description, f"{kind} {path}: {description!r}"


@pytest.mark.parametrize("kind", KINDS)
def test_cel_rules_compile_and_carry_messages(kind: str) -> None:
    rules = [rule for _, node in walk(root_schema(kind)) for rule in node.get("x-kubernetes-validations", [])]
    assert rules
    for rule in rules:
        cel.check_compiles(rule["rule"])
        assert len(rule["message"]) > 15


@pytest.mark.parametrize("kind", KINDS)
def test_lists_referenced_by_cel_are_bounded(kind: str) -> None:
    # The API server estimates each rule's cost and rejects CRDs whose rules iterate unbounded lists.
    for path, node in walk(root_schema(kind)["properties"]["spec"], "spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{kind} {path} needs maxItems"


@pytest.mark.parametrize("kind", KINDS)
def test_names_printer_columns_and_status(kind: str) -> None:
    spec = CRDS[kind]["spec"]
    version = spec["versions"][0]
    assert spec["group"] == "llmops.dev" and spec["scope"] == "Namespaced"
    assert "llmops" in spec["names"]["categories"]
    assert version["subresources"] == {"status": {}}
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names[0] == "Phase" and names[-1] == "Age"
    status = root_schema(kind)["properties"]["status"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".status."):
            node = status
            for part in column["jsonPath"].split(".")[2:]:
                node = node["properties"][part]
            assert node["type"] == column["type"] or column["type"] == "date", column


def test_short_names_are_unique_and_do_not_shadow_builtins() -> None:
    short = [name for c in CRDS.values() for name in c["spec"]["names"]["shortNames"]]
    assert len(short) == len(set(short))
    assert not set(short) & BUILTIN_SHORT_NAMES


def test_deployment_kind_is_reachable_despite_the_apps_v1_name_clash() -> None:
    names = CRDS["Deployment"]["spec"]["names"]
    assert CRDS["Deployment"]["metadata"]["name"] == "deployments.llmops.dev"
    assert names["shortNames"] == ["llmdeploy"]


def test_transition_rules_guard_immutable_fields() -> None:
    rules = root_schema("PretrainJob")["properties"]["spec"]["x-kubernetes-validations"]
    model = next(r for r in rules if "oldSelf.model" in r["rule"])
    assert model["fieldPath"] == ".model" and "self.model == oldSelf.model" in model["rule"]
    # An optional field: adding or removing it after creation is a change too.
    assert "has(self.model) == has(oldSelf.model)" in model["rule"]


def test_crd_files_are_valid_yaml_with_the_header(root: Path) -> None:
    for path in (root / "crds").glob("*.yaml"):
        text = path.read_text()
        assert text.startswith("# Generated from the API models")
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
