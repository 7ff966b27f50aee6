"""Deployment: serve a gated model, roll new revisions out step by step on live metrics, roll back by itself.

Observe -> decide -> act like every kind, with the rollout state in status (the operator never writes .spec):
1. the target revision: the artifact spec.model resolves to (or the revision `llmops rollout undo` pinned), with
   the server settings and image; a new (artifact, settings, image) is a new revision number;
2. the gate: the target takes traffic only once its Evaluation Passed for that very artifact;
3. the rollout: the first revision starts at full size; later ones go through spec.canary's steps (see
   serving/rollout.py), judged by analysis checks whose metric reads the Kopf layer makes when a check is due;
4. the children: per live revision a ConfigMap, an apps/v1 Deployment and a Service (serving/revisions.py), and
   the entry point and route (serving/traffic.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from llmops.operator.api.v1alpha1 import rollout_commands as commands
from llmops.operator.api.v1alpha1.common import seconds
from llmops.operator.api.v1alpha1.deployment import (
    AnalysisCheck,
    CanaryStatus,
    Deployment,
    DeploymentPhase,
    DeploymentStatus,
    Outcome,
    Revision,
    Verdict,
)
from llmops.operator.settings import OperatorSettings, TrafficRouter

from .conditions import get_condition, set_condition
from .jobs import stuck_pod, terminated_cause
from .serving import analysis, gate, online, revisions, rollout, traffic
from .serving.rollout import Observed
from .serving.samples import Window
from .training import model_reference, model_run, resolve_model
from .workload import Decision, Event

METRICS_KEY = ("Metrics", "")
"""Where the Kopf layer puts the metric reads of a due check in the observed references."""
ENDED = (Outcome.ROLLED_BACK, Outcome.ABORTED, Outcome.FAILED)


@dataclass(frozen=True)
class MetricsRead:
    """One check's worth of metrics, read by the Kopf layer when `metrics_wanted` says a check is due."""

    canary: Window | None
    """The revision under test over the interval (None: nothing could be read)."""
    stable: Window | None
    """The stable revision over the same interval (None: none, or nothing read)."""
    source: str
    """prometheus or scrape."""
    baseline: bool = False
    """The first scrape of a revision: a baseline to difference later, nothing to judge yet."""


def references(deployment: Deployment) -> list[tuple[str, str]]:
    out = [target] if (target := model_reference(deployment.spec.model)) else []
    return [*out, ("Evaluation", deployment.spec.gate.evaluation)]


def router(settings: OperatorSettings) -> TrafficRouter:
    """The router the reconcile uses (the Kopf layer resolves auto by discovery; unresolved means none)."""
    return TrafficRouter.REPLICAS if settings.traffic_router is TrafficRouter.AUTO else settings.traffic_router


# --- observe ------------------------------------------------------------------------------------------------

def _revision_of(obj: dict[str, Any]) -> int | None:
    value = (obj.get("metadata", {}).get("labels") or {}).get(revisions.LABEL_REVISION)
    return int(value) if value and value.isdigit() else None


def _crash_cause(pods: list[dict[str, Any]]) -> str | None:
    """A server container that keeps exiting: what it said last (e.g. the model failed to load)."""
    if cause := terminated_cause(pods, "lastState"):
        return f"a server container exited with code {cause[0]}" + (f": {cause[1]}" if cause[1] else "")
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses", []):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == "CrashLoopBackOff":
                return f"pod {pod['metadata']['name']}: CrashLoopBackOff: {waiting.get('message', '')}".strip()
    return None


def observe(children: dict[str, list[dict[str, Any]]]) -> dict[int, Observed]:
    """Each revision's server Deployment (replicas, ready) and why its pods are not ready, if one says."""
    pods: dict[int, list[dict[str, Any]]] = {}
    for pod in children.get("Pod", []):
        if (revision := _revision_of(pod)) is not None:
            pods.setdefault(revision, []).append(pod)
    out = {}
    for apps in children.get("Deployment", []):
        labels = apps["metadata"].get("labels") or {}
        if labels.get(revisions.LABEL_COMPONENT) != revisions.COMPONENT or (revision := _revision_of(apps)) is None:
            continue
        own = pods.get(revision, [])
        stuck = stuck_pod(own)
        cause = stuck[1] if stuck else _crash_cause(own)
        out[revision] = Observed(apps.get("spec", {}).get("replicas", 0),
                                 apps.get("status", {}).get("readyReplicas", 0), cause)
    return out


def pod_urls(children: dict[str, list[dict[str, Any]]], revision: int, port: int) -> list[str]:
    """Base URLs of a revision's ready pods (what a direct scrape reads)."""
    urls = []
    for pod in children.get("Pod", []):
        status = pod.get("status", {})
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
        if _revision_of(pod) == revision and ready and status.get("podIP"):
            urls.append(f"http://{status['podIP']}:{port}")
    return sorted(urls)


def metrics_wanted(deployment: Deployment, now: datetime) -> tuple[int, int | None] | None:
    """(revision under test, revision to compare with) when a check is due now, else None."""
    status = deployment.status
    state = status.canary if status else None
    if state is None or not rollout.check_due(deployment.spec, state, now):
        return None
    compare = state.previous_revision if state.promoted_at is None else None
    return state.revision, compare


# --- decide -------------------------------------------------------------------------------------------------

@dataclass
class Target:
    spec: revisions.RevisionSpec
    gate: gate.GateResult
    evaluation: str


class _Rollout:
    """One reconcile's working state: the status being built, the pods and weights wanted, the Events."""

    def __init__(self, deployment: Deployment, settings: OperatorSettings, now: datetime):
        self.deployment, self.spec, self.settings, self.now = deployment, deployment.spec, settings, now
        self.status: DeploymentStatus = (deployment.status or DeploymentStatus()).model_copy(deep=True)
        self.generation = deployment.metadata.generation
        self.router = router(settings)
        self.routed = self.router is not TrafficRouter.REPLICAS
        self.events: list[Event] = []
        self.replicas: dict[int, int] = {}
        self.jobs: list[dict[str, Any]] = []
        """Children beyond the revisions and the route: the current step's online Evaluation."""

    # history
    def entry(self, revision: int) -> Revision | None:
        return next((r for r in self.status.history if r.revision == revision), None)

    def by_digest(self, digest: str) -> Revision | None:
        return next((r for r in reversed(self.status.history) if r.digest == digest), None)

    def stable(self) -> Revision | None:
        return next((r for r in self.status.history if r.outcome is Outcome.STABLE), None)

    def say(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def end(self, entry: Revision, outcome: Outcome, reason: str) -> None:
        """A rollout that stops: the revision gets no traffic from now on and is not retried at this spec."""
        entry.outcome, entry.reason, entry.generation, entry.ended_at = outcome, reason, self.generation, self.now
        self.status.canary = None
        warning = outcome is not Outcome.SUPERSEDED
        self.say("Warning" if warning else "Normal", outcome.value if outcome is not Outcome.FAILED
                 else "RolloutFailed", f"revision {entry.revision}: {reason}")


def _pending_commands(deployment: Deployment, status: DeploymentStatus) -> dict[str, str]:
    annotations = deployment.metadata.annotations
    return {key: annotations[key] for key in commands.KEYS
            if key in annotations and status.handled_commands.get(key) != annotations[key]}


def _target(run: _Rollout, refs: dict[tuple[str, str], Any]) -> tuple[Target | None, str]:
    """The revision to serve (None while its model is not ready) and, if None, why."""
    spec, status = run.spec, run.status
    if status.pinned_revision is not None and (pinned := run.entry(status.pinned_revision)) is not None:
        result = gate.GateResult(True, gate.GateReason.REUSED, f"revision {pinned.revision} pinned by `llmops "
                                 f"rollout undo`; its Evaluation {pinned.evaluation} passed when it was served",
                                 dict(pinned.metrics))
        return Target(revisions.RevisionSpec(pinned.revision, pinned.digest, pinned.model_uri, pinned.image), result,
                      pinned.evaluation), ""
    model = resolve_model(spec.model, refs)
    if not model.ready or not model.artifact_uri:
        return None, model.message
    image = revisions.server_image(run.deployment, run.settings)
    made_by = model_run(spec.model, refs)
    digest = revisions.digest(model.artifact_uri, run.deployment, image, made_by)
    known = run.by_digest(digest)
    number = known.revision if known else max((r.revision for r in status.history), default=0) + 1
    name = spec.gate.evaluation
    result = gate.check(name, refs.get(("Evaluation", name)), model.artifact_uri, made_by)
    return Target(revisions.RevisionSpec(number, digest, model.artifact_uri, image, made_by), result, name), ""


def _record(run: _Rollout, target: Target, outcome: Outcome, reason: str | None) -> Revision:
    """The target's history entry (added when new), now with this outcome at this generation."""
    entry = run.entry(target.spec.revision)
    if entry is None:
        entry = Revision(revision=target.spec.revision, digest=target.spec.digest, model_uri=target.spec.model_uri,
                         model_run=target.spec.model_run, image=target.spec.image, evaluation=target.evaluation,
                         outcome=outcome)
        run.status.history.append(entry)
    entry.outcome, entry.reason, entry.generation = outcome, reason, run.generation
    entry.metrics = dict(target.gate.metrics) or entry.metrics
    return entry


def _start(run: _Rollout, target: Target, stable: Revision | None) -> None:
    entry = _record(run, target, Outcome.CANARY, None)
    entry.created_at = run.now
    run.status.canary = CanaryStatus(revision=entry.revision, previous_revision=stable.revision if stable else None,
                                     started_at=run.now, waiting_since=run.now)
    what = f"from revision {stable.revision}" if stable else "as the first revision"
    run.say("Normal", "RolloutStarted", f"revision {entry.revision} ({entry.model_uri}) rolls out {what}")


def _promote(run: _Rollout, state: CanaryStatus, stable: Revision | None) -> None:
    entry = run.entry(state.revision)
    assert entry is not None
    entry.outcome, entry.deployed_at, entry.reason = Outcome.STABLE, run.now, None
    if stable is not None:
        stable.outcome, stable.reason = Outcome.SUPERSEDED, f"replaced by revision {entry.revision}"
    state.promoted_at, state.weight, state.desired_weight = run.now, 100, 100
    state.step_started_at = state.waiting_since = None
    keep = f"; revision {stable.revision} scales down in {run.spec.canary.scale_down_delay}" if (
        stable and run.spec.canary and run.routed) else ""
    run.say("Normal", "Promoted", f"revision {entry.revision} takes all traffic{keep}")
    if stable is None or run.spec.canary is None:
        run.status.canary = None  # nothing to watch after a first start or a plain replacement


def _judge(run: _Rollout, state: CanaryStatus, read: MetricsRead | None) -> rollout.CheckEffect:
    """Apply a due check's metrics; schedule the next one."""
    interval = rollout.analysis_interval(run.spec)
    if read is None or interval is None or not rollout.check_due(run.spec, state, run.now):
        return rollout.CheckEffect()
    state.next_check_at = run.now + timedelta(seconds=interval)
    if read.baseline:
        return rollout.CheckEffect()
    assert run.spec.canary is not None and run.spec.canary.analysis is not None
    check: AnalysisCheck = analysis.check(run.spec.canary.analysis, read.canary, read.stable, run.now, read.source)
    effect = rollout.count_check(run.spec, state, check)
    kind = "Warning" if check.verdict is Verdict.FAILED else "Normal"
    run.say(kind, f"Analysis{check.verdict.value}", f"revision {state.revision}: {check.message}")
    return effect


def _rollback(run: _Rollout, state: CanaryStatus, outcome: Outcome, reason: str) -> None:
    entry = run.entry(state.revision)
    previous = run.entry(state.previous_revision) if state.previous_revision is not None else None
    if state.promoted_at is not None and previous is not None:  # post-promotion: the old stable is still warm
        previous.outcome, previous.reason = Outcome.STABLE, None
    if entry is not None:
        run.end(entry, outcome, reason)
    run.status.canary = None
    # Its traffic goes at once (the route drops to weight 0 in this same apply); the stable gets all its pods back.
    run.replicas[state.revision] = 0
    if state.previous_revision is not None:
        run.replicas[state.previous_revision] = run.spec.replicas


def _online_check(run: _Rollout, state: CanaryStatus, children: dict[str, list[dict[str, Any]]]) -> None:
    """Run the step's online Evaluation of the canary's endpoint; a Failed verdict is a failed check (and it
    runs again), a Passed one lets the step end."""
    desired = online.children(run.deployment, state, run.settings)
    check = online.result(desired, children, state, run.now)
    if check is None:
        state.online_evaluation = "Running"
        run.jobs += desired
        return
    if check.verdict is Verdict.PASSED:
        state.online_evaluation = "Passed"
        run.say("Normal", "OnlineEvaluationPassed", f"revision {state.revision}: {check.message}")
        return
    run.say("Warning", "AnalysisFailed", f"revision {state.revision}: {check.message}")
    if rollout.count_check(run.spec, state, check).rollback:
        _rollback(run, state, Outcome.ROLLED_BACK, f"analysis failed {state.failed_checks} times: {check.message}")
        return
    state.online_attempts += 1  # the next attempt starts now
    run.jobs += online.children(run.deployment, state, run.settings)


def _online(spec: Any) -> bool:
    return bool(spec.canary and spec.canary.analysis and spec.canary.analysis.online_evaluation)


def _canary_step(run: _Rollout, state: CanaryStatus, stable: Revision | None, observed: dict[int, Observed],
                 read: MetricsRead | None, pending: dict[str, str], children: dict[str, list[dict[str, Any]]]) -> None:
    """Advance a rollout in progress by one reconcile: pods, weights, checks, steps, promotion, failure."""
    spec = run.spec
    seen = observed.get(state.revision, Observed())
    if commands.ABORT in pending:
        _rollback(run, state, Outcome.ABORTED, "aborted by `llmops rollout abort`")
        return
    if state.promoted_at is not None:  # post-promotion: the new stable serves, the old one stays warm a while
        effect = _judge(run, state, read)
        if effect.rollback:
            _rollback(run, state, Outcome.ROLLED_BACK, f"failed post-promotion analysis: {state.last_check.message}"
                      if state.last_check else "failed post-promotion analysis")
            return
        delay = timedelta(seconds=seconds(spec.canary.scale_down_delay)) if spec.canary else timedelta()
        if run.now >= state.promoted_at + delay:
            run.say("Normal", "ScaledDown", f"revision {state.previous_revision} scaled down")
            run.status.canary = None
        return
    if commands.PROMOTE in pending:
        state.step, state.paused_reason = len(spec.canary.steps) if spec.canary else 0, None
        state.step_started_at = None
        run.say("Normal", "PromoteRequested", f"revision {state.revision}: remaining steps skipped by "
                "`llmops rollout promote`")
    # The checks of the interval that just ended belong to the step it ran in; then that step may end.
    effect = _judge(run, state, read)
    if effect.rollback:
        check = state.last_check
        _rollback(run, state, Outcome.ROLLED_BACK, f"analysis failed {state.failed_checks} times: "
                  f"{check.message if check else ''}")
        return
    if effect.pause and state.paused_reason is None:
        state.paused_reason = "AnalysisInconclusive"
        run.say("Warning", "AnalysisInconclusive", f"revision {state.revision}: {state.inconclusive_checks} "
                "inconclusive checks (too little traffic?); the rollout holds until `llmops rollout promote` or abort")
    online_done = not _online(spec) or state.online_evaluation == "Passed"
    if not (spec.paused or state.paused_reason) and online_done and rollout.step_done(spec, state, run.now):
        run.say("Normal", "StepCompleted", f"revision {state.revision}: step {state.step + 1} done")
        state.step += 1
        state.step_started_at, state.step_passed = None, False
        state.online_evaluation, state.online_attempts = None, 0
    # Pods and weights of the current step.
    promoting = stable is None or spec.canary is None or state.step >= len(spec.canary.steps)
    desired = 100 if promoting else rollout.desired_weight(spec, state.step)
    wanted = spec.replicas if promoting else rollout.canary_pods(spec, desired)
    state.desired_weight = desired
    if stable is not None:
        run.replicas[stable.revision], _ = rollout.replica_split(spec, desired, seen.ready, run.routed)
    run.replicas[state.revision] = wanted
    ready = rollout.step_reached(seen, wanted)
    if run.routed:
        state.weight = rollout.routed_weight(desired, state.weight, seen, wanted)
        state.effective_weight = None
    else:
        stable_ready = observed.get(stable.revision, Observed()).ready if stable else 0
        state.effective_weight = rollout.effective_weight(stable_ready, seen.ready)
        state.weight = state.effective_weight
    if promoting and ready:
        _promote(run, state, stable)
        return
    if not ready:
        if state.waiting_since is None:
            state.waiting_since = run.now
        if rollout.deadline_passed(spec, state.waiting_since, run.now):
            cause = seen.cause or f"{seen.ready} of {wanted} pods ready"
            _rollback(run, state, Outcome.FAILED, f"pods not ready within progressDeadline {spec.progress_deadline}: "
                      f"{cause}")
        return
    state.waiting_since = None
    if state.step_started_at is None:
        state.step_started_at = run.now
        if (interval := rollout.analysis_interval(spec)) is not None and state.next_check_at is None:
            # A direct scrape needs a first scrape to difference against: take it now, so the first check covers
            # the step's first interval. Prometheus keeps the history itself.
            first = 0.0 if run.settings.prometheus_url is None else interval
            state.next_check_at = run.now + timedelta(seconds=first)
        run.say("Normal", "StepReached", f"revision {state.revision}: step {state.step + 1} at {desired}% of traffic")
    if _online(spec) and state.online_evaluation != "Passed":
        _online_check(run, state, children)


def _weights(run: _Rollout, stable: Revision | None) -> dict[int, int]:
    """Route weights: the canary's share, the rest to the stable; zero for revisions that must get none."""
    state = run.status.canary
    weights = {revision: 0 for revision in run.replicas}
    if state is not None and state.revision in weights:
        weights[state.revision] = state.weight
        rest = 100 - state.weight
        if state.promoted_at is not None or stable is None:
            return weights
        if stable.revision in weights:
            weights[stable.revision] = rest
        return weights
    if stable is not None:
        weights[stable.revision] = 100
    return weights


def _conditions(run: _Rollout, target: Target | None, waiting: str, observed: dict[int, Observed]) -> None:
    status, now, gen = run.status, run.now, run.generation
    stable = run.stable()
    serving = stable is not None and (observed.get(stable.revision, Observed()).ready > 0 or run.spec.replicas == 0)
    state = status.canary
    newest = run.entry(target.spec.revision) if target else None
    degraded = newest is not None and newest.outcome in (*ENDED, Outcome.GATED) and newest.generation == gen
    if target is None:
        set_condition(status.conditions, "Gated", False, "WaitingForModel", waiting, now, gen)
    else:
        set_condition(status.conditions, "Gated", target.gate.passed, target.gate.reason.value, target.gate.message,
                      now, gen)
    draining = any(rev not in (stable.revision if stable else None, state.revision if state else None)
                   and seen.ready > 0 for rev, seen in observed.items())
    if state is not None:
        paused = run.spec.paused or state.paused_reason is not None
        reason = "Paused" if run.spec.paused else state.paused_reason or "RollingOut"
        message = (f"revision {state.revision} at step {state.step + 1}, {state.weight}% of traffic"
                   if state.promoted_at is None else f"revision {state.revision} promoted; post-promotion analysis")
        set_condition(status.conditions, "Progressing", not paused, reason, message, now, gen)
        status.phase = DeploymentPhase.PROGRESSING
    else:
        set_condition(status.conditions, "Progressing", False, "RolloutComplete" if serving else "NotServing",
                      f"revision {stable.revision} serves all traffic" if stable else waiting or "nothing serves yet",
                      now, gen)
        if degraded and stable is not None:
            status.phase = DeploymentPhase.ROLLING_BACK if draining else DeploymentPhase.DEGRADED
        elif degraded:  # and nothing serves: the only revision failed to start, or its gate said no
            status.phase = DeploymentPhase.FAILED
        elif stable is None:
            status.phase = DeploymentPhase.WAITING
        else:
            status.phase = DeploymentPhase.AVAILABLE
    if degraded and newest is not None:
        set_condition(status.conditions, "Degraded", True, newest.outcome.value, newest.reason or "", now, gen)
    else:
        set_condition(status.conditions, "Degraded", False, "Healthy", "no rollout failed at this generation", now, gen)
    if serving and stable is not None:
        set_condition(status.conditions, "Ready", True, "Serving", f"revision {stable.revision} serves at "
                      f"{status.url}", now, gen)
    else:
        ready_reason = (get_condition(status.conditions, "Gated") if target is None or not target.gate.passed
                        else None)
        set_condition(status.conditions, "Ready", False, ready_reason.reason if ready_reason else "Starting",
                      ready_reason.message if ready_reason else "the first revision's pods are starting", now, gen)


def _trim(run: _Rollout) -> None:
    """Keep the stable, the canary and the newest revisionHistoryLimit others."""
    live = {r.revision for r in run.status.history if r.outcome in (Outcome.STABLE, Outcome.CANARY)}
    others = [r for r in run.status.history if r.revision not in live]
    keep = {r.revision for r in others[len(others) - run.spec.revision_history_limit:]} if \
        run.spec.revision_history_limit else set()
    run.status.history = [r for r in run.status.history if r.revision in live or r.revision in keep]


def reconcile(deployment: Deployment, children: dict[str, list[dict[str, Any]]], refs: dict[tuple[str, str], Any],
              settings: OperatorSettings, now: datetime) -> Decision:
    run = _Rollout(deployment, settings, now)
    status, spec = run.status, run.spec
    pending = _pending_commands(deployment, status)
    if status.pinned_generation is not None and status.pinned_generation != run.generation:
        status.pinned_revision = status.pinned_generation = None  # the spec changed: it decides again
    if commands.UNDO in pending:
        try:
            revision, _ = commands.parse_undo(pending[commands.UNDO])
        except commands.CommandValueError as error:
            run.say("Warning", "InvalidCommand", str(error))
        else:
            if run.entry(revision) is None:
                run.say("Warning", "InvalidCommand", f"revision {revision} is not in status.history: no undo")
            else:
                status.pinned_revision, status.pinned_generation = revision, run.generation
                run.say("Normal", "UndoRequested", f"revision {revision} rolls out again (`llmops rollout undo`)")
    observed = observe(children)
    target, waiting = _target(run, refs)
    stable = run.stable()
    state = status.canary
    if (target is not None and state is not None and state.promoted_at is None
            and state.revision != target.spec.revision):
        entry = run.entry(state.revision)
        if entry is not None:
            run.end(entry, Outcome.SUPERSEDED, f"spec changed to revision {target.spec.revision} mid-rollout")
        state = None
    if target is not None and (stable is None or target.spec.digest != stable.digest):
        entry = run.by_digest(target.spec.digest)
        if target.gate.failed:
            if state is not None and state.revision == target.spec.revision and state.promoted_at is None:
                _rollback(run, state, Outcome.GATED, target.gate.message)
                state = None
            if entry is None or entry.outcome is not Outcome.GATED or entry.reason != target.gate.message:
                _record(run, target, Outcome.GATED, target.gate.message)
                run.say("Warning", "GateFailed", target.gate.message)
        elif target.gate.passed and state is None:
            blocked = entry is not None and entry.outcome in ENDED and entry.generation == run.generation
            if blocked and commands.RETRY in pending:
                blocked = False
            if not blocked and (entry is None or entry.outcome is not Outcome.STABLE):
                _start(run, target, stable)
                state = status.canary
    read = refs.get(METRICS_KEY)
    if state is not None:
        _canary_step(run, state, stable, observed, read, pending, children)
    stable = run.stable()
    if stable is not None and stable.revision not in run.replicas:
        run.replicas[stable.revision] = spec.replicas
    if (state := status.canary) is not None and state.promoted_at is not None and state.previous_revision is not None:
        run.replicas[state.previous_revision] = spec.replicas if run.routed else 0  # warm until scaled down
    for revision, seen in observed.items():  # a revision that lost its traffic drains before its objects go
        if revision not in run.replicas and seen.ready > 0 and run.entry(revision) is not None:
            run.replicas[revision] = 0
    status.handled_commands.update(pending)
    _trim(run)
    status.url = revisions.url(deployment)
    status.traffic = run.router.value
    status.current_revision = stable.revision if stable else None
    status.replicas = sum(seen.replicas for seen in observed.values())
    status.ready_replicas = sum(seen.ready for seen in observed.values())
    status.observed_generation = run.generation
    _conditions(run, target, waiting, observed)
    children_out: list[dict[str, Any]] = []
    by_number = {r.revision: r for r in status.history}
    for revision, pods in sorted(run.replicas.items()):
        entry = by_number.get(revision)
        if entry is None:
            continue
        spec_ = revisions.RevisionSpec(entry.revision, entry.digest, entry.model_uri, entry.image)
        children_out += revisions.revision_children(deployment, spec_, pods, settings)
    children_out += run.jobs
    weights = _weights(run, stable)
    children_out += traffic.entry_children(deployment, stable.revision if stable else None,
                                           {r: w for r, w in weights.items() if r in by_number}, run.router, settings)
    return Decision(children=children_out, status=status.to_wire(), events=run.events,
                    requeue_after=rollout.wake_up(spec, status.canary, now))
