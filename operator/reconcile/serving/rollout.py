"""Rollout policies, each a pure function: pod counts and weights of a step, when a step ends, what a check does.

Steps follow Argo Rollouts' canary: each step sends `weight` percent of traffic to the new revision and holds
for `pause`; analysis runs at every interval meanwhile. Two choices differ from Argo on purpose:
- a step with analysis ends only after one passing check during it, so a canary that got no traffic (every
  check inconclusive) is never promoted by the clock alone;
- with a traffic router the stable keeps all its pods until the promotion (a rollback is a weight change, never a
  cold start), and the old stable stays warm for scaleDownDelay after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from llmops.operator.api.v1alpha1.common import seconds
from llmops.operator.api.v1alpha1.deployment import AnalysisCheck, CanaryStatus, DeploymentSpec, Verdict


@dataclass(frozen=True)
class Observed:
    """A revision's apps/v1 Deployment and pods as observed now."""

    replicas: int = 0
    """Pods it is asked to run now (its spec.replicas)."""

    ready: int = 0
    """Ready pods."""

    cause: str | None = None
    """Why its pods are not ready, when a pod says (image pull, crash, model that failed to load)."""


def desired_weight(spec: DeploymentSpec, step: int) -> int:
    """Percent of traffic the step asks for; without canary steps a new revision takes all at once."""
    if spec.canary is None or step >= len(spec.canary.steps):
        return 100
    return spec.canary.steps[step].weight


def canary_pods(spec: DeploymentSpec, weight: int) -> int:
    """Pods the canary needs for `weight` percent: its share of spec.replicas, at least one."""
    return max(1, math.ceil(spec.replicas * weight / 100))


def replica_split(spec: DeploymentSpec, weight: int, canary_ready: int, routed: bool) -> tuple[int, int]:
    """(stable pods, canary pods) for a step at `weight`. With a router the stable keeps all its pods. Without
    one the pod ratio is the split, and the stable gives up only as many pods as the canary has ready: the
    stable never shrinks before the canary can take its share."""
    canary = canary_pods(spec, weight)
    if routed:
        return spec.replicas, canary
    return max(0, spec.replicas - min(canary_ready, canary)), canary


def routed_weight(desired: int, current: int, canary: Observed, wanted_pods: int) -> int:
    """Traffic sent to the canary: the step's weight once the pods its share needs are ready; meanwhile the weight
    its ready pods already carried (none when it has no ready pod)."""
    if canary.ready == 0:
        return 0
    return desired if canary.ready >= wanted_pods else min(current, desired)


def effective_weight(stable_ready: int, canary_ready: int) -> int:
    """Without a router: ready canary pods over all ready pods, in percent (what the Service's endpoints give)."""
    total = stable_ready + canary_ready
    return round(100 * canary_ready / total) if total else 0


def step_reached(canary: Observed, wanted_pods: int) -> bool:
    return canary.ready >= wanted_pods


def step_done(spec: DeploymentSpec, state: CanaryStatus, now: datetime) -> bool:
    """The step's pause is over and, with analysis, a check passed during it."""
    if state.step_started_at is None or spec.canary is None or state.step >= len(spec.canary.steps):
        return False
    pause = timedelta(seconds=seconds(spec.canary.steps[state.step].pause))
    if now < state.step_started_at + pause:
        return False
    return spec.canary.analysis is None or state.step_passed


def deadline_passed(spec: DeploymentSpec, since: datetime | None, now: datetime) -> bool:
    return since is not None and now >= since + timedelta(seconds=seconds(spec.progress_deadline))


@dataclass(frozen=True)
class CheckEffect:
    """What one analysis check does to the rollout."""

    rollback: bool = False
    pause: bool = False


def count_check(spec: DeploymentSpec, state: CanaryStatus, check: AnalysisCheck) -> CheckEffect:
    """Record a check in the rollout's counters (in place) and say whether it rolls back or pauses."""
    analysis = spec.canary.analysis if spec.canary else None
    state.last_check = check
    if analysis is None:
        return CheckEffect()
    if check.verdict is Verdict.FAILED:
        state.failed_checks += 1
        return CheckEffect(rollback=state.failed_checks >= analysis.failure_limit)
    if check.verdict is Verdict.INCONCLUSIVE:
        state.inconclusive_checks += 1
        return CheckEffect(pause=state.inconclusive_checks >= analysis.inconclusive_limit)
    state.step_passed = True
    return CheckEffect()


def analysis_interval(spec: DeploymentSpec) -> float | None:
    analysis = spec.canary.analysis if spec.canary else None
    return seconds(analysis.interval) if analysis is not None else None


def check_due(spec: DeploymentSpec, state: CanaryStatus | None, now: datetime) -> bool:
    """Whether the I/O layer should read the revisions' metrics for a check in this reconcile."""
    return (state is not None and analysis_interval(spec) is not None and state.next_check_at is not None
            and now >= state.next_check_at)


def wake_up(spec: DeploymentSpec, state: CanaryStatus | None, now: datetime) -> float | None:
    """Seconds until something time-driven happens: a check, the end of a pause or of the scale-down delay, the
    progress deadline. Only moments still ahead count: one already past was acted on in this reconcile, or waits
    for something else (a passing check, a promote), so asking again at once would only spin."""
    if state is None:
        return None
    moments = [state.next_check_at]
    if spec.canary is not None and state.step_started_at is not None and state.step < len(spec.canary.steps):
        moments.append(state.step_started_at + timedelta(seconds=seconds(spec.canary.steps[state.step].pause)))
    if state.promoted_at is not None and spec.canary is not None:
        moments.append(state.promoted_at + timedelta(seconds=seconds(spec.canary.scale_down_delay)))
    if state.waiting_since is not None:
        moments.append(state.waiting_since + timedelta(seconds=seconds(spec.progress_deadline)))
    ahead = [(m - now).total_seconds() for m in moments if m is not None and m > now]
    return max(0.5, min(ahead)) if ahead else None
