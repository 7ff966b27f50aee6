"""Offline admission: check a manifest the way the API server checks it against our CRDs.

Same order as the API server: apply schema defaults (also in place of nulls), validate the structural schema with
strict field validation (unknown fields are errors, as with `kubectl apply`'s default), then evaluate the
CEL rules at every node that has them (transition rules only when an old object is given). It reads the
generated schemas, so it checks what the cluster will check; local mode (`llmops run`) and
`llmops validate` use it, and the tests prove it against a real API server.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from llmops.trainer.config import cel

from .crds import openapi_schema
from .schema import Schema
from .v1alpha1 import API_VERSION, KINDS, Resource

_MISSING = object()


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class AdmissionError(ValueError):
    """A manifest the API server would reject; `violations` name each field and what is wrong."""

    def __init__(self, name: str, violations: list[Violation]):
        self.violations = violations
        super().__init__(f"{name} is invalid:\n" + "\n".join(f"  - {v}" for v in violations))


@cache
def _schemas(kind: str) -> tuple[Schema, Any]:
    schema = openapi_schema(KINDS[kind])
    return schema, jsonschema.Draft4Validator(_strict(schema))


def admit(manifest: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the manifest as the API server would store it (defaults applied), or raise AdmissionError."""
    kind = manifest.get("kind")
    name = f"{kind or 'object'} {manifest.get('metadata', {}).get('name', '<unnamed>')!r}"
    if manifest.get("apiVersion") != API_VERSION or kind not in KINDS:
        raise AdmissionError(name, [Violation(
            "apiVersion/kind",
            f"expected apiVersion {API_VERSION} and kind one of {', '.join(KINDS)}; "
            f"got {manifest.get('apiVersion')!r}/{kind!r}")])
    if not isinstance(manifest.get("metadata", {}).get("name"), str):
        raise AdmissionError(name, [Violation("metadata.name", "Required value")])

    schema, validator = _schemas(kind)
    obj = apply_defaults(schema, copy.deepcopy(manifest))
    violations = [_violation(error) for error in validator.iter_errors(obj)]
    if not violations:  # CEL needs well-typed input, as on the server
        violations = list(_cel_violations(schema, obj, old, path=""))
    if violations:
        raise AdmissionError(name, sorted(violations, key=lambda v: v.path))
    return obj


def parse(manifest: dict[str, Any], old: dict[str, Any] | None = None) -> Resource:
    """Admit the manifest and return it as its typed model."""
    obj = admit(manifest, old)
    return KINDS[obj["kind"]].model_validate(obj)


def load_manifests(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document in the given files and directories (recursively, sorted), with its file."""
    out = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        for file in files:
            out += [(file, doc) for doc in yaml.safe_load_all(file.read_text()) if doc]
    return out


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Structural defaulting: fill missing properties that have a default, recursively, top-down."""
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            # A null is replaced by the default where there is one; elsewhere it stays, and fails validation.
            if (name not in value or value[name] is None) and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        value[:] = [apply_defaults(schema["items"], item) for item in value]
    return value


def _strict(schema: Schema) -> Schema:
    """Reject unknown fields, as strict server-side field validation does."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    return out


def _path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _violation(error: jsonschema.ValidationError) -> Violation:
    path = _path(error.absolute_path)
    if error.validator == "required":
        missing = [p for p in error.validator_value if p not in error.instance]
        return Violation(_path([*error.absolute_path, missing[0]]), "Required value")
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return Violation(_path([*error.absolute_path, unknown[0]]), "unknown field; check its spelling and place")
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return Violation(path, f"Unsupported value {error.instance!r}: supported values: {allowed}")
    return Violation(path, error.message)


def _cel_violations(schema: Schema, value: Any, old: Any, path: str) -> Iterator[Violation]:
    """Evaluate `x-kubernetes-validations` at every node present in `value`, children first."""
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                old_child = old.get(name, _MISSING) if isinstance(old, dict) else _MISSING
                yield from _cel_violations(child, value[name], old_child, f"{path}.{name}" if path else name)
    elif isinstance(value, list) and "items" in schema:
        old_items = _correlate(schema, value, old)
        for index, item in enumerate(value):
            yield from _cel_violations(schema["items"], item, old_items[index], f"{path}[{index}]")

    typed = _as_schema_types(schema, value)
    typed_old = _as_schema_types(schema, old) if old is not _MISSING else None
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and typed_old is None:
            continue
        if not cel.evaluate(rule["rule"], typed, typed_old if transition else None):
            where = path + rule.get("fieldPath", "") if path else rule.get("fieldPath", "").lstrip(".")
            yield Violation(where, f"Invalid value: {rule['message']}")


def _correlate(schema: Schema, value: list[Any], old: Any) -> list[Any]:
    """Old items matching new ones: only map-type lists correlate (by key), as on the API server."""
    keys = schema.get("x-kubernetes-list-map-keys")
    if not keys or not isinstance(old, list):
        return [_MISSING] * len(value)
    by_key = {tuple(item.get(k) for k in keys): item for item in old}
    return [by_key.get(tuple(item.get(k) for k in keys), _MISSING) for item in value]


def _as_schema_types(schema: Schema, value: Any) -> Any:
    """CEL sees `number` fields as doubles even when the YAML wrote an integer, as on the API server."""
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: _as_schema_types(props.get(k, extra if isinstance(extra, dict) else {}), v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_as_schema_types(schema.get("items", {}), v) for v in value]
    return value
