"""Render the API reference (Markdown) from the same structural schemas the CRDs hold."""

from __future__ import annotations

import json
from typing import Any

from .crds import kind_of, openapi_schema
from .schema import Schema
from .v1alpha1 import API_VERSION, KINDS


def render_reference() -> str:
    lines = [
        "<!-- Generated from the API models by `llmops generate`. Do not edit by hand. -->",
        "# API reference: `" + API_VERSION + "`",
        "",
        "Every field of every kind, with its type, default and constraints. The validation rules (CEL) under",
        "each kind are checked by the API server at admission, and offline by `llmops validate`.",
        "",
    ]
    for resource in KINDS.values():
        kind = kind_of(resource)
        schema = openapi_schema(resource)
        names = resource.names
        lines += [
            f"## {kind}",
            "",
            schema["description"],
            "",
            f"`kubectl get {names.plural}.llmops.dev` (short name `{names.short_names[0]}`).",
            "",
        ]
        for root in ("spec", "status"):
            lines += ["| field | type | default | description |", "|---|---|---|---|"]
            lines += _rows(schema["properties"][root], root)
            lines.append("")
        rules = list(_rules(schema["properties"]["spec"], "spec")) + [
            ("", rule) for rule in schema.get("x-kubernetes-validations", [])
        ]
        if rules:
            lines.append("Validation rules (CEL):")
            lines.append("")
            for where, rule in rules:
                target = (where + rule.get("fieldPath", "")) or "object"
                lines.append(f"- `{target}`: {rule['message']}")
            lines.append("")
    return "\n".join(lines)


def _type_name(node: Schema) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "")
    if kind == "array":
        return f"[]{_type_name(node['items'])}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type_name(node['additionalProperties'])}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    return kind


def _constraints(node: Schema) -> str:
    parts = []
    for key, label in (("minimum", ">="), ("maximum", "<="), ("minItems", "items >="),
                       ("maxItems", "items <="), ("minLength", "length >="), ("maxLength", "length <=")):
        if key in node:
            exclusive = node.get("exclusive" + key[0].upper() + key[1:]) is True
            parts.append(f"{label.replace('=', '') if exclusive else label} {node[key]}")
    return f" ({', '.join(parts)})" if parts else ""


def _rows(node: Schema, path: str) -> list[str]:
    rows = []
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}"
        default = json.dumps(child["default"]) if "default" in child else ("required" if name in required else "")
        description = " ".join(child.get("description", "").split()) + _constraints(child)
        rows.append(f"| `{child_path}` | {_type_name(child)} | {default} | {description} |")
        target = child["items"] if child.get("type") == "array" else child
        suffix = "[]" if child.get("type") == "array" else ""
        rows += _rows(target, child_path + suffix)
    return rows


def _rules(node: Schema, path: str) -> Any:
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for name, child in node.get("properties", {}).items():
        if child.get("type") == "array":
            yield from _rules(child["items"], f"{path}.{name}[]")
        else:
            yield from _rules(child, f"{path}.{name}")
