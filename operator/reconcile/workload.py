"""What every Job-backed kind shares: the decision type, and status from how its run stands (any backend)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from llmops.operator.api.v1alpha1.common import Phase, WorkloadStatus
from llmops.operator.settings import OperatorSettings

from .conditions import get_condition, set_condition
from .plan import LaunchPlan, RunObservation, RunState, Waiting

StatusT = TypeVar("StatusT", bound=WorkloadStatus)


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


class Rejected(NotImplementedError):
    """A spec this cluster or operator cannot run (e.g. needs an integration that is absent): the resource Fails
    with `reason` and a message that says the way out. Level-based: a later reconcile may accept it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Decision:
    """What one reconcile wants: the children to exist (applied as given), the status, the Events."""

    children: list[dict[str, Any]]
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    """Seconds after which to reconcile again even if nothing changes (a pause ends, a check is due)."""


class WorkloadKind(Protocol):
    """What a Job-backed kind's module provides (dataset, pretrainjob, finetune, evaluation)."""

    def references(self, resource: Any) -> list[tuple[str, str]]: ...

    def plan(self, resource: Any, refs: dict[tuple[str, str], Any], settings: OperatorSettings
             ) -> LaunchPlan | Waiting: ...

    def complete(self, resource: Any, status: Any, plan: LaunchPlan, observation: RunObservation,
                 refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]: ...


def decide(kind: WorkloadKind, resource: Any, observe: Callable[[LaunchPlan], RunObservation],
           refs: dict[tuple[str, str], Any], settings: OperatorSettings, now: datetime
           ) -> tuple[LaunchPlan | None, dict[str, Any], list[Event]]:
    """Pure, backend-neutral: the plan this resource wants run (None while it waits), and its next status and
    Events given how the backend says the run stands (`observe`)."""
    previous = resource.status or type(resource).field_model("status")()
    generation = resource.metadata.generation
    planned = kind.plan(resource, refs, settings)
    if isinstance(planned, Waiting):
        decision = waiting(previous, generation, now, planned.what, planned.message, planned.failed)
        return None, decision.status, decision.events
    observation = observe(planned)
    status, events = workload_status(previous, observation.state, generation=generation, job_name=planned.run,
                                     artifact_uri=planned.artifact_uri, now=now)
    events += kind.complete(resource, status, planned, observation, refs, now)
    return planned, status.to_wire(), events


def workload_status(previous: StatusT, state: RunState, *, generation: int | None, job_name: str,
                    artifact_uri: str, now: datetime) -> tuple[StatusT, list[Event]]:
    """Next status of a Job-backed resource, and an Event when the phase changed."""
    status = previous.model_copy(deep=True)
    old_phase = status.phase
    old_reason = ready.reason if (ready := get_condition(previous.conditions, "Ready")) else None
    done = state.phase in (Phase.SUCCEEDED, Phase.FAILED)
    if previous.job_name not in (None, job_name):  # a new run (new generation) starts from zero
        status.progress = None
        if "metrics" in type(status).model_fields:
            status = status.model_copy(update={"metrics": None})
    status.phase = state.phase
    status.observed_generation = generation
    status.job_name = job_name
    # "When it started running": the Job's start time is known before its pods run, but is only shown once
    # they do (writing it while Pending would cost a status write of its own).
    if state.phase is not Phase.PENDING:
        status.start_time = state.start_time or status.start_time
    status.completion_time = state.completion_time if done else None
    status.restarts = state.failed_pods
    status.artifact_uri = artifact_uri if state.phase is Phase.SUCCEEDED else None
    status.waiting_for = None
    for type_, value in (("Succeeded", state.phase is Phase.SUCCEEDED), ("Failed", state.phase is Phase.FAILED),
                         ("Progressing", not done and not state.stalled), ("Ready", state.phase is Phase.SUCCEEDED)):
        set_condition(status.conditions, type_, value, state.reason, state.message, now, generation)
    events = []
    # A stall (e.g. a quota refusal) is news within the same phase too: say it once, when it starts.
    if old_phase != state.phase or (state.stalled and old_reason != state.reason):
        warning = state.phase is Phase.FAILED or state.stalled
        events.append(Event("Warning" if warning else "Normal", state.reason, state.message))
    return status, events


def waiting(previous: StatusT, generation: int | None, now: datetime, what: str, message: str,
            failed: bool) -> Decision:
    """Waiting for (or failed because of) a referenced resource: no children yet, and a status that says why."""
    status = previous.model_copy(deep=True)
    old_phase = status.phase
    status.phase = Phase.FAILED if failed else Phase.WAITING
    status.observed_generation = generation
    status.waiting_for = None if failed else what
    reason = f"{what.split()[0]}Failed" if failed else f"WaitingFor{what.split()[0]}"
    for type_, value in (("Succeeded", False), ("Failed", failed), ("Progressing", not failed), ("Ready", False)):
        set_condition(status.conditions, type_, value, reason, message, now, generation)
    events = [] if old_phase == status.phase else [Event("Warning" if failed else "Normal", reason, message)]
    return Decision(children=[], status=status.to_wire(), events=events)
