"""Generate the CustomResourceDefinitions (and the API reference) from the API models.

`llmops generate` writes them; a unit test regenerates them and fails on any difference, so the YAML in
`crds/` and in the Helm chart can never drift from the models.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from .schema import Schema, structural_schema
from .v1alpha1 import GROUP, VERSION, Resource

HEADER = "# Generated from the API models by `llmops generate`. Do not edit by hand.\n"
CRD_DIRS = (Path("crds"), Path("charts/llmops-operator/crds"))


def kind_of(resource: type[Resource]) -> str:
    return resource.model_fields["kind"].default


def spec_schema(resource: type[Resource]) -> Schema:
    return structural_schema(resource.field_model("spec"))


def openapi_schema(resource: type[Resource]) -> Schema:
    """The whole object's schema: apiVersion, kind, metadata, spec, status, and the root rules."""
    status = structural_schema(resource.field_model("status"))
    return {
        "description": inspect.cleandoc(resource.__doc__ or ""),
        "type": "object",
        "properties": {
            "apiVersion": {"description": f"{GROUP}/{VERSION}", "type": "string"},
            "kind": {"description": kind_of(resource), "type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(resource),
            "status": status,
        },
        "required": ["spec"],
        "x-kubernetes-validations": [rule.to_kubernetes() for rule in resource.root_rules],
    }


def crd(resource: type[Resource]) -> dict[str, Any]:
    kind, names = kind_of(resource), resource.names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "llmops-operator"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": names.plural,
                "singular": kind.lower(),
                "shortNames": list(names.short_names),
                "categories": list(names.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_printer_column(c) for c in names.printer_columns],
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }


def _printer_column(column: Any) -> dict[str, Any]:
    out = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        out["description"] = column.description
    if column.priority:
        out["priority"] = column.priority
    return out


def crd_filename(resource: type[Resource]) -> str:
    return f"{GROUP}_{resource.names.plural}.yaml"


def render_crd(resource: type[Resource]) -> str:
    return HEADER + yaml.safe_dump(crd(resource), sort_keys=False, width=110)
