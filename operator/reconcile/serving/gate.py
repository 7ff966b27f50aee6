"""The promotion gate: a revision may take traffic only once its Evaluation Passed for the very artifact served.

Pure: reads the gating Evaluation's status as the index holds it. An Evaluation counts only when it has
finished, its verdict is Passed and the artifact it scored (`status.modelUri`) is the one the Deployment
resolves; an Evaluation of another model, or one still scoring a newer run, does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class GateReason(StrEnum):
    PASSED = "EvaluationPassed"
    WAITING = "WaitingForEvaluation"
    FAILED = "EvaluationFailed"
    ANOTHER_MODEL = "EvaluatedAnotherModel"
    REUSED = "VerdictReused"
    """`llmops rollout undo`: the revision's recorded verdict is used again."""


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: GateReason
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    """The Evaluation's key metrics (task/metric: value), recorded in the revision history."""

    @property
    def failed(self) -> bool:
        """A final no for this artifact (as opposed to not known yet)."""
        return self.reason is GateReason.FAILED


def _metrics(status: dict[str, Any]) -> dict[str, float]:
    return {f"{r['task']}/{r['metric']}": float(r["value"]) for r in status.get("results", [])
            if r.get("value") is not None}


def _failing(status: dict[str, Any]) -> str:
    parts = []
    for result in status.get("results", []):
        if result.get("passed") is False:
            value = "unmeasured" if result.get("value") is None else format(result["value"], ".4g")
            margin = f", margin {result['margin']:.4g}" if result.get("margin") is not None else ""
            parts.append(f"{result['task']}/{result['metric']} {value} (needs {result.get('threshold')}{margin})")
    return "; ".join(parts) or "no threshold reported"


def check(name: str, evaluation: dict[str, Any] | None, model_uri: str, model_run: str | None = None) -> GateResult:
    """Whether Evaluation `name` (its body, None when absent) lets `model_uri` take traffic; with `model_run`, only
    an Evaluation of that run counts (a retrained model keeps its URI)."""
    if evaluation is None:
        return GateResult(False, GateReason.WAITING, f"Evaluation {name} does not exist yet")
    status = evaluation.get("status") or {}
    phase, scored = status.get("phase"), status.get("modelUri")
    if phase != "Succeeded" or status.get("verdict") not in ("Passed", "Failed"):
        if phase == "Failed":
            return GateResult(False, GateReason.FAILED, f"Evaluation {name} failed to run; fix it, or gate on "
                                                        "another Evaluation")
        return GateResult(False, GateReason.WAITING, f"Evaluation {name} is {phase or 'not started'}")
    if scored != model_uri:
        return GateResult(False, GateReason.ANOTHER_MODEL,
                          f"Evaluation {name} scored {scored or 'an unrecorded artifact'}, not {model_uri} that this "
                          "Deployment serves; point spec.gate.evaluation at an Evaluation of the same model")
    if model_run is not None and status.get("modelRun") != model_run:
        return GateResult(False, GateReason.ANOTHER_MODEL,
                          f"Evaluation {name} scored {status.get('modelRun') or 'an earlier run'} of {model_uri}, not "
                          f"the current one ({model_run}); it must evaluate this run before it serves")
    if status["verdict"] == "Failed":
        return GateResult(False, GateReason.FAILED, f"Evaluation {name} failed: {_failing(status)}", _metrics(status))
    return GateResult(True, GateReason.PASSED, f"Evaluation {name} passed for {model_uri}", _metrics(status))
