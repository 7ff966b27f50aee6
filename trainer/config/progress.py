"""Progress lines: the JSON objects a workload's rank-0 process prints on stdout, one per line.

Two kinds, told apart by `event`:

    {"event": "train", "time", "step", "totalSteps", "loss", ...}          the trainers (MetricsLog)
    {"event": "progress", "stage", "completed", "total", "unit", ...}      the data pipeline and the evaluator

The writers serialise these models (`to_line`) and the operator, reading the tail of the pod's log, validates
them back (`parse_lines`): one model per kind, so writer and reader cannot drift apart. Reading never fails:
plain text, a cut line, another kind, a wrongly typed field or a non-finite number is simply not a report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, Field, ValidationError

from .base import StatusModel


class Line(StatusModel):
    """A progress line of any kind; unknown fields (from a newer writer) are ignored."""

    model_config = ConfigDict(frozen=True)

    def is_finite(self) -> bool:
        """Whether every number is finite. A diverged step's line carries NaN/inf (JSON extensions that Python
        writes and reads) so people see it in the log; it is a record of the failure, not a report."""
        return all(math.isfinite(value) for value in self.model_dump().values() if isinstance(value, float))

    def to_line(self) -> str:
        """One line of JSON, `event` first (tests and people grep for `{"event"`), without nulls."""
        return json.dumps(self.to_wire())


class TrainLine(Line):
    """A trainer's report. A validation report carries `validationLoss` and no `loss`."""

    event: Literal["train"] = "train"
    time: float | None = None
    """Unix time of the report (the reader derives steps/s from two of them)."""

    step: int = Field(ge=0)
    """Optimizer steps done."""

    total_steps: int | None = Field(default=None, ge=1)
    """Steps the run will do."""

    loss: float | None = None
    """Mean training loss over the last log interval."""

    validation_loss: float | None = None
    """Loss on the validation split."""

    learning_rate: float | None = None
    grad_norm: float | None = None
    """Global gradient norm before clipping."""

    tokens_per_second: float | None = Field(default=None, ge=0)
    """Throughput over all processes."""

    mfu: float | None = None
    """Model FLOPs utilisation, where the accelerator's peak is known."""

    tokens_seen: int | None = Field(default=None, ge=0)
    eta_seconds: float | None = Field(default=None, ge=0)
    accuracy: float | None = None
    """A classification fine-tune's accuracy on the batch; a reward model's share of pairs ranked right."""

    reward_margin: float | None = None
    """A DPO fine-tune's or a reward model's mean reward margin (chosen minus rejected)."""

    kl: float | None = None
    """A distillation's KL(teacher || student) per token at the distillation temperature."""

    cross_entropy: float | None = None
    """A distillation's next-token cross-entropy on the data."""

    error: str | None = None
    """Set on the last line of a run that stopped, e.g. `NonFiniteLoss`."""


class ProgressLine(Line):
    """How far a stage has come. `stage` is optional so any workload can print plain progress."""

    event: Literal["progress"] = "progress"
    stage: str | None = None
    """The pipeline's stage (read, clean, tokenizer, pack, done) or the evaluator's task; `done` ends the run."""

    completed: int = Field(ge=0)
    total: int | None = Field(default=None, ge=0)
    """Units the stage will do, when known."""

    unit: str = "items"
    """What is counted (documents, tokens, tasks)."""

    rate: float | None = Field(default=None, ge=0)
    """Units per second since the workload started."""

    elapsed_seconds: float | None = Field(default=None, ge=0)


LineT = TypeVar("LineT", bound=Line)


def _json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every line of `text` that is a whole JSON object; plain text and a cut first or last line are skipped."""
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def parse_lines(text: str, kind: type[LineT]) -> list[LineT]:
    """The well-formed, finite lines of one kind in `text` (e.g. a log tail), in order."""
    event = kind.model_fields["event"].default  # the writer fills it in; a reader requires it
    out: list[LineT] = []
    for value in _json_objects(text):
        if value.get("event") != event:
            continue
        try:
            line = kind.model_validate(value)
        except ValidationError:
            continue  # a field of the wrong type or out of range
        if line.is_finite():
            out.append(line)
    return out
