"""The README's lifecycle table names real fields: each `Kind.spec.path` (or `Kind.spec.path=value`) it lists
exists in that kind's generated CRD schema (and the value is one of the field's enum values)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KINDS = "Dataset|PretrainJob|FineTune|Evaluation|Deployment"
FIELD = re.compile(rf"`({KINDS})\.((?:spec|status)(?:\.[A-Za-z]+)*)(?:=(\w+))?`")


def lifecycle_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Where each lifecycle stage lives")
    return text[start:text.index("\n#", start + 1)]


def schema(kind: str) -> dict[str, Any]:
    plural = {"Dataset": "datasets", "PretrainJob": "pretrainjobs", "FineTune": "finetunes",
              "Evaluation": "evaluations", "Deployment": "deployments"}[kind]
    crd = yaml.safe_load((ROOT / "crds" / f"llmops.dev_{plural}.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def field(kind: str, path: str) -> dict[str, Any]:
    node = schema(kind)
    for name in path.split("."):
        properties = node.get("properties") or (node.get("items") or {}).get("properties") or {}
        assert name in properties, f"README names {kind}.{path}, but {name!r} is not a field there"
        node = properties[name]
    return node


def test_every_field_the_lifecycle_table_names_exists() -> None:
    found = FIELD.findall(lifecycle_section())
    assert len(found) >= 25, found  # the table really is read
    for kind, path, value in found:
        node = field(kind, path)
        if value:
            assert value in node.get("enum", []), f"{kind}.{path} has no value {value!r}"
