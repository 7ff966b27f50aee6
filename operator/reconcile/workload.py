"""What every Job-backed kind shares: the decision type, and status from how its run stands (any backend)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from llmops.operator.api.v1alpha1.common import ConditionStatus, Phase, RunInput, WorkloadStatus
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


RUN_CONDITIONS = ("Succeeded", "Failed", "Progressing", "Ready")
"""The conditions every workload keeps; a kind's own (an Evaluation's Passed) say something of one run only."""


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
    planned = replace(planned, number=run_number(previous, generation, planned))
    observation = observe(planned)
    status, events = workload_status(previous, observation.state, generation=generation, job_name=planned.run,
                                     artifact_uri=planned.artifact_uri, now=now, run_number=planned.number,
                                     inputs=planned.inputs)
    events += kind.complete(resource, status, planned, observation, refs, now)
    return planned, status.to_wire(), events


def run_number(previous: WorkloadStatus, generation: int | None, planned: LaunchPlan) -> int:
    """The number of the run `planned` is: the current run's while the spec generation and the inputs it consumes
    are those of the current run, else the next number, never below the generation (so that a resource whose
    inputs never change has runs numbered as its generations). Numbers only grow: a new run never takes the name
    of an earlier one, whose Job may have completed with other inputs."""
    generation = generation or 1
    current = previous.job_name is not None and previous.observed_generation == generation
    if current and previous.run_number is not None and previous.inputs == list(planned.inputs):
        return previous.run_number
    if current and previous.run_number is None and previous.job_name == replace(planned, number=generation).run:
        return generation  # a status from before runs were numbered by their inputs: that run is this one
    return max((previous.run_number or 0) + 1, generation)


def new_run_status(previous: StatusT, generation: int | None, now: datetime) -> StatusT:
    """The status a new run (or a wait for new inputs) starts from: empty but for the run counter and the
    conditions (whose lastTransitionTime says since when); a kind's own conditions become Unknown."""
    status = type(previous)(conditions=[c.model_copy() for c in previous.conditions],
                            run_number=previous.run_number)
    for condition in status.conditions:
        if condition.type not in RUN_CONDITIONS:
            set_condition(status.conditions, condition.type, ConditionStatus.UNKNOWN, "NewRun",
                          "not known yet for the current run", now, generation)
    return status


def workload_status(previous: StatusT, state: RunState, *, generation: int | None, job_name: str,
                    artifact_uri: str, now: datetime, run_number: int | None = None,
                    inputs: tuple[RunInput, ...] = ()) -> tuple[StatusT, list[Event]]:
    """Next status of a Job-backed resource whose run `job_name` (number `run_number`, consuming `inputs`) stands
    at `state`, and an Event when the phase changed."""
    if previous.job_name not in (None, job_name):  # a new run: nothing of the last one is current any more
        previous = new_run_status(previous, generation, now)
    status = previous.model_copy(deep=True)
    old_phase = status.phase
    old_reason = ready.reason if (ready := get_condition(previous.conditions, "Ready")) else None
    done = state.phase in (Phase.SUCCEEDED, Phase.FAILED)
    status.phase = state.phase
    status.observed_generation = generation
    status.job_name, status.run_number, status.inputs = job_name, run_number, [i.model_copy() for i in inputs]
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
    """Waiting for (or failed because of) a referenced resource: no children (a run in progress is stopped), and
    a status that says why and shows nothing of an earlier run as current."""
    status = new_run_status(previous, generation, now)
    old_phase = previous.phase
    status.phase = Phase.FAILED if failed else Phase.WAITING
    status.observed_generation = generation
    status.waiting_for = None if failed else what
    reason = f"{what.split()[0]}Failed" if failed else f"WaitingFor{what.split()[0]}"
    for type_, value in (("Succeeded", False), ("Failed", failed), ("Progressing", not failed), ("Ready", False)):
        set_condition(status.conditions, type_, value, reason, message, now, generation)
    events = [] if old_phase == status.phase else [Event("Warning" if failed else "Normal", reason, message)]
    return Decision(children=[], status=status.to_wire(), events=events)
