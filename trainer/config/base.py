"""The base class of every API and workload config model.

One model serves three readers: the trainer (its config), the operator (the custom resource's spec), and
the CRD generator (the OpenAPI schema the API server enforces). So the conventions live here once:
camelCase field names on the wire, a docstring per field that becomes its schema description, unknown
fields rejected, and cross-field rules written once in CEL (`cel_rules`) that both the API server and
pydantic evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from . import cel


@dataclass(frozen=True)
class Rule:
    """A CEL rule on a model, emitted as `x-kubernetes-validations` on the model's schema node.

    `field_path` (e.g. `.steps`) points the API server's error at a child field. A rule that mentions
    `oldSelf` is a transition rule: it only runs on update, so pydantic (which sees one version) skips it.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.rule

    def to_kubernetes(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def _add_cel_rules_to_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(model, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_kubernetes() for rule in rules]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, field docstrings as schema descriptions."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_attribute_docstrings=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON form a Kubernetes client would send: camelCase keys, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ApiModel(WireModel):
    """Base of all spec-side models: unknown fields rejected, CEL rules checked."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_add_cel_rules_to_schema)

    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        rules = [rule for rule in type(self).cel_rules if not rule.is_transition]
        if not rules:
            return self
        # Same view the API server's CEL sees: wire names, defaults filled in, unset optionals absent.
        failing = set(cel.failing_rules([rule.rule for rule in rules], self.to_wire()))
        for rule in rules:
            if rule.rule in failing:
                where = f"{rule.field_path.lstrip('.')}: " if rule.field_path else ""
                raise PydanticCustomError("cel_rule", "{where}{message}", {"where": where, "message": rule.message})
        return self


class StatusModel(WireModel):
    """Base of status models: written by the operator, so unknown fields from newer versions are ignored."""

    model_config = ConfigDict(extra="ignore")
