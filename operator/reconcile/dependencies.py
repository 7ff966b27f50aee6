"""References between resources, and what a downstream resource does when what it references changes.

A FineTune names its base (a PretrainJob or FineTune), an Evaluation its model, a PretrainJob its Dataset. The
downstream resource follows what it references, as a GitOps user expects of declared state:

- It uses a referenced resource's artifact only while that resource has Succeeded *at its current generation*
  (`status.observedGeneration == metadata.generation`): a Succeeded status left over from before a spec edit
  describes an artifact that is about to be overwritten in place.
- Each run records the artifacts it consumes in `status.inputs` (kind, name, generation, the run that made it,
  artifactUri). When a referenced resource produces a new artifact (a new generation, or a re-run of its own
  inputs), the downstream starts a new, distinct run: run numbers only grow, so its Job is
  `<name>-<suffix>-<runNumber>` with a number never used before, and a completed Job is never re-created.
- While a referenced resource has no current artifact (it is re-running, or failed), the downstream waits (or
  fails), and any run in progress is stopped: the upstream rewrites the very files it reads. Its status then
  shows nothing of the previous run as current: no artifactUri, no verdict or results, no metrics; an
  Evaluation's `Passed` condition is Unknown, so a Deployment's gate never reads a replaced run as Passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmops.operator.api.v1alpha1.common import RunInput


@dataclass(frozen=True)
class Dependency:
    ready: bool
    failed: bool
    message: str
    artifact_uri: str | None = None
    input: RunInput | None = None
    """The artifact as a run records it in status.inputs (None for a model given by uri)."""


def dependency(kind: str, name: str, body: dict[str, Any] | None) -> Dependency:
    """Pure reading of a referenced resource's status."""
    if body is None:
        return Dependency(False, False, f"{kind} {name} does not exist yet")
    status = body.get("status") or {}
    phase = status.get("phase")
    generation = (body.get("metadata") or {}).get("generation")
    if generation is not None and status.get("observedGeneration") != generation:
        return Dependency(False, False, f"{kind} {name} has a new spec (generation {generation}) that has not run "
                                        "yet")
    if phase == "Succeeded" and status.get("artifactUri"):
        made = RunInput(kind=kind, name=name, generation=generation, run=status.get("jobName"),
                        artifact_uri=status["artifactUri"])
        return Dependency(True, False, f"{kind} {name} has succeeded", status["artifactUri"], made)
    if phase == "Failed":
        failed = next((c for c in status.get("conditions", []) if c.get("type") == "Failed"), {})
        return Dependency(False, True, f"{kind} {name} failed: {failed.get('message', 'no reason given')}")
    return Dependency(False, False, f"{kind} {name} is {phase or 'not started'}")
