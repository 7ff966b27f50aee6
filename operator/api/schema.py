"""Turn pydantic's JSON Schema into a Kubernetes structural schema (OpenAPI v3 subset).

Pydantic writes JSON Schema 2020-12: `$ref`s into `$defs`, `anyOf [X, null]` for optionals, numeric
`exclusiveMinimum`, `uniqueItems`. A CRD needs a structural schema: everything inlined, one type per
node, boolean `exclusiveMinimum`, list types instead of `uniqueItems`, no `additionalProperties: false`
(the API server prunes or, with strict field validation, rejects unknown fields instead).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault

Schema = dict[str, Any]

# Keys we understand and keep; anything else pydantic emits is an error, so nothing slips through unseen.
_KEPT = {
    "description", "type", "format", "enum", "default", "pattern", "minLength", "maxLength", "minimum",
    "maximum", "minItems", "maxItems", "minProperties", "maxProperties", "properties", "required", "items",
    "additionalProperties", "anyOf",
}
_DROPPED = {"title", "examples", "uniqueItems", "$defs", "readOnly", "propertyNames"}

_KEY_ORDER = [
    "description", "type", "format", "enum", "default", "pattern", "minLength", "maxLength", "minimum",
    "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems", "maxItems", "minProperties",
    "maxProperties", "anyOf", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields", "properties", "required", "items",
    "additionalProperties", "x-kubernetes-validations",
]


class UnsupportedSchema(ValueError):
    """A model uses a type that has no structural-schema equivalent (e.g. a union of two objects)."""


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also publish defaults made by `default_factory`, so the API server fills them in like pydantic does.

    A nested model's default is written out whole. (A bare `{}` would be filled in by nested defaults at
    admission too, but the API server checks each default against the CEL rules as written, so `{}` fails
    any rule that reads a field.)
    """

    def get_default_value(self, schema: Any) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", by_alias=True, exclude_none=True)
        return value if value is not None else NoDefault


def json_schema(model: type[BaseModel]) -> Schema:
    """Pydantic's JSON Schema of `model` in validation mode with wire (camelCase) names."""
    return model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural schema of `model`, ready for a CRD's openAPIV3Schema."""
    raw = json_schema(model)
    return _convert(raw, raw.get("$defs", {}), path=model.__name__)


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline a `$ref` (or pydantic's `allOf: [{$ref}]` wrapper); the referring node's keys win."""
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
    if "$ref" not in node:
        return node
    name = node["$ref"].removeprefix("#/$defs/")
    target = _resolve(copy.deepcopy(defs[name]), defs)
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        node = _drop_null_branch(node, defs, path)

    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}{{}}")
            # `false` is dropped: structural schemas forbid it next to `properties`.
        elif key == "default" and value is None:
            continue
        elif key == "description":
            out[key] = " ".join(value.split())  # docstrings wrap at 120 columns; `kubectl explain` wraps itself
        elif key in _KEPT or key.startswith("x-kubernetes-"):
            out[key] = value
        else:
            raise UnsupportedSchema(f"{path}: schema keyword {key!r} is not supported in CRDs")

    if node.get("uniqueItems") and "x-kubernetes-list-type" not in out:
        out["x-kubernetes-list-type"] = "set"
    if "const" in node and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        raise UnsupportedSchema(f"{path}: no single type (unions of objects have no structural schema)")
    return {key: out[key] for key in sorted(out, key=_order)}


def _drop_null_branch(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    branches = [b for b in node["anyOf"] if b != {"type": "null"}]
    if len(branches) != 1:
        raise UnsupportedSchema(f"{path}: a union of {len(branches)} types has no structural schema")
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    return {**_resolve(branches[0], defs), **outer}


def _order(key: str) -> int:
    return _KEY_ORDER.index(key) if key in _KEY_ORDER else len(_KEY_ORDER)
