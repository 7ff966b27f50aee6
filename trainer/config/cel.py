"""Evaluate Kubernetes CEL validation rules in Python, so that local mode and the API server agree.

The rules live once, on the config models (see `base.Rule`). The API server evaluates them from the
generated CRDs; this module evaluates the very same strings with `cel-python` for pydantic validation and
for the offline admission check. Only the subset of the Kubernetes CEL library that our rules use is
provided here; a rule that calls anything else fails loudly at compile time in the unit tests.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from typing import Any

import celpy
from celpy import celtypes


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    """Kubernetes list library `isSorted()`: true when each element is <= the next one."""
    return celtypes.BoolType(all(values[i] <= values[i + 1] for i in range(len(values) - 1)))


# Kubernetes-specific functions our rules may call, by name.
_KUBERNETES_FUNCTIONS = {"isSorted": _is_sorted}

_ENVIRONMENT = celpy.Environment()


class CelRuleError(ValueError):
    """A rule that does not compile or does not return a bool: a bug in the model, not in the input."""


@cache
def _program(rule: str) -> celpy.Runner:
    try:
        return _ENVIRONMENT.program(_ENVIRONMENT.compile(rule), functions=_KUBERNETES_FUNCTIONS)
    except celpy.CELParseError as error:
        raise CelRuleError(f"CEL rule does not parse: {rule!r}: {error}") from error


def check_compiles(rule: str) -> None:
    """Raise CelRuleError when `rule` is not valid CEL."""
    _program(rule)


def failing_rules(rules: list[str], self_value: Any, old_self: Any = None) -> list[str]:
    """The rules that are false with `self` (and `oldSelf`) bound to JSON-like values."""
    # cel-python interprets a parse tree (about 1 ms a rule); the operator re-reads the same specs on every
    # event, so results are memoised by the rules and the exact values.
    return list(_failing_rules_cached(tuple(rules), json.dumps(self_value, sort_keys=True),
                                      json.dumps(old_self, sort_keys=True)))


@lru_cache(maxsize=4096)
def _failing_rules_cached(rules: tuple[str, ...], self_json: str, old_json: str) -> tuple[str, ...]:
    activation = {"self": celpy.json_to_cel(json.loads(self_json))}  # converted once for all rules
    old_self = json.loads(old_json)
    if old_self is not None:
        activation["oldSelf"] = celpy.json_to_cel(old_self)
    failing = []
    for rule in rules:
        result = _program(rule).evaluate(activation)
        if not isinstance(result, celtypes.BoolType):
            # cel-python returns an error value (not an exception) for e.g. a missing field without has().
            raise CelRuleError(f"CEL rule {rule!r} evaluated to {result!r}, not a bool")
        if not result:
            failing.append(rule)
    return tuple(failing)


def evaluate(rule: str, self_value: Any, old_self: Any = None) -> bool:
    """Evaluate one rule; see failing_rules."""
    return not failing_rules([rule], self_value, old_self)
