"""How a workload tells the operator why it stopped: stderr for people, the pod's termination message for
the operator (it copies it into the resource's Failed condition), and an exit code for the Job's policy."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from llmops.trainer.config.result import MESSAGE_LIMIT, TERMINATION_LOG_ENV, CheckpointStatus, WorkloadResult


def termination_log() -> Path:
    return Path(os.environ.get(TERMINATION_LOG_ENV) or "/dev/termination-log")


def write_termination_message(message: str) -> None:
    path = termination_log()
    if path.exists():  # in a pod, the kubelet creates it; where nobody reads it, nothing is written
        path.write_text(message[:MESSAGE_LIMIT])


def report(result: WorkloadResult) -> None:
    """Leave the workload's result on the result channel (see llmops.trainer.config.result)."""
    write_termination_message(result.to_message())


def fail(program: str, message: str, exit_code: int) -> int:
    """Report `message` and return `exit_code` (for `sys.exit`)."""
    print(f"{program}: {message}", file=sys.stderr)
    write_termination_message(message)
    return exit_code


def report_trained(model_dir: str, history: list[dict[str, Any]], summary: dict[str, Any], *,
                   parameters: int | None = None, checkpoint: CheckpointStatus | None = None) -> None:
    """Rank 0, once a trained model is exported: where it is, its final losses, its trainable parameters and
    newest checkpoint, on the result channel."""
    loss = next((e["loss"] for e in reversed(history) if e.get("loss") is not None), None)
    metrics = {"loss": loss, "validationLoss": summary.get("validationLoss")}
    report(WorkloadResult(artifact_uri=model_dir, metrics={k: float(v) for k, v in metrics.items() if v is not None},
                          parameters=parameters, checkpoint=checkpoint))
