"""When the operator looks at a resource again without an event: a pure decision.

The operator schedules this itself instead of with Kopf timers, because Kopf puts a finalizer on every resource
a timer could run for, and a resource with a finalizer cannot be deleted while the operator is down.

Two things can be due. A full reconcile: after the resync interval (a safety net), sooner when a Decision asks
(a pause, an analysis interval) or when an API error is retried. In between, a cheap poll for what no watch
reports: a Pending resource's Jobs that get no pods (a quota refuses them, and only an Event says so), and a
Running resource's live progress (its rank-0 pod's log).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmops.operator.api.v1alpha1.common import Phase

RESYNC_SECONDS = 60.0
# A Job that should have pods and has none only says why in its Events: a Pending resource is looked at this often.
STUCK_POLL_SECONDS = 10.0


@dataclass(frozen=True)
class Wake:
    """Look again in `delay` seconds: a full reconcile, or only the poll of the resource's phase."""

    delay: float
    reconcile: bool


def poll_interval(phase: str | None, progress_interval: float) -> float | None:
    """How often a resource in `phase` is polled between reconciles; None: never."""
    if phase == Phase.PENDING:
        return STUCK_POLL_SECONDS
    if phase == Phase.RUNNING and progress_interval > 0:
        return progress_interval
    return None


def reconcile_delay(requeue_after: float | None) -> float:
    """When the next full reconcile is due after a successful one: as the Decision asks, at the latest the resync."""
    return RESYNC_SECONDS if requeue_after is None else max(min(requeue_after, RESYNC_SECONDS), 0.0)


def next_poll(now: float, planned: float | None, interval: float | None) -> float | None:
    """When to poll next (monotonic seconds): the poll already planned while it is ahead and no further off than
    one interval (the phase may have changed to one polled more often), else one interval from `now`. Events and
    the reconciles they cause do not move it, so a busy resource is still polled."""
    if interval is None:
        return None
    if planned is not None and now < planned <= now + interval:
        return planned
    return now + interval


def next_wake(now: float, reconcile_at: float, poll_at: float | None) -> Wake:
    """The next wake from `now` (monotonic seconds): the poll planned at `poll_at` if it comes first, else the
    reconcile due at `reconcile_at`."""
    if poll_at is not None and poll_at < reconcile_at:
        return Wake(max(poll_at - now, 0.0), reconcile=False)
    return Wake(max(reconcile_at - now, 0.0), reconcile=True)
