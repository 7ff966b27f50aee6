"""The result channel: what a finished workload tells whoever runs it (the operator, or `llmops run`).

The workload writes one WorkloadResult as JSON to its termination message (`/dev/termination-log` in a pod,
the file `LLMOPS_TERMINATION_LOG` names elsewhere); the Kubernetes backend reads it from the pod's status,
the local backend from that file. A failing workload writes its cause there as plain text instead, which is
not a result (`from_message` gives None).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, ValidationError

from .base import StatusModel
from .evaluate import MetricResult
from .manifest import DatasetStats

TERMINATION_LOG_ENV = "LLMOPS_TERMINATION_LOG"
"""Where a workload outside a pod writes its termination message (a pod's is `/dev/termination-log`)."""

MESSAGE_LIMIT = 4096
"""What Kubernetes keeps of a termination message."""


class CheckpointStatus(StatusModel):
    step: int
    """Step of the newest complete checkpoint."""

    uri: str
    """Where it is."""


class WorkloadResult(StatusModel):
    verdict: Literal["Passed", "Failed"] | None = None
    """An evaluation's verdict."""

    results: list[MetricResult] = Field(default_factory=list)
    """An evaluation's measured metrics with their thresholds (as many as fit the message)."""

    artifact_uri: str | None = None
    """Where the workload wrote its output, when it says so."""

    metrics: dict[str, float] = Field(default_factory=dict)
    """A training run's final figures (`loss`, `validationLoss`), in TrainingMetrics' wire names."""

    parameters: int | None = None
    """A training run's trainable parameters."""

    checkpoint: CheckpointStatus | None = None
    """A training run's newest complete checkpoint."""

    stats: DatasetStats | None = None
    """A Dataset's counts (from its manifest)."""

    tokenizer_uri: str | None = None
    """A Dataset's tokenizer.json."""

    def to_message(self) -> str:
        """Compact JSON within MESSAGE_LIMIT: results are dropped from the end until it fits."""
        result = self.model_copy(deep=True)
        while True:
            message = json.dumps(result.to_wire(), separators=(",", ":"))
            if len(message) <= MESSAGE_LIMIT or not result.results:
                return message
            result.results.pop()

    @classmethod
    def from_message(cls, message: str | None) -> WorkloadResult | None:
        """The result in a termination message; None for a plain-text cause, an empty or foreign message."""
        if not message or not message.lstrip().startswith("{"):
            return None
        try:
            document = json.loads(message)
            result = cls.model_validate(document)
        except (json.JSONDecodeError, ValidationError):
            return None
        return result if result.verdict or result.artifact_uri or result.stats else None
