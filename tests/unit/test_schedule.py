"""When the operator looks at a resource again without an event (its own schedule, not Kopf timers)."""

from __future__ import annotations

import pytest

from llmops.operator.runtime.schedule import (
    RESYNC_SECONDS,
    STUCK_POLL_SECONDS,
    Wake,
    next_poll,
    next_wake,
    poll_interval,
    reconcile_delay,
)


@pytest.mark.parametrize(("phase", "progress_interval", "want"), [
    ("Pending", 15, STUCK_POLL_SECONDS),  # Jobs without pods only say why in Events: look for them
    ("Running", 15, 15),  # live progress from the rank-0 log
    ("Running", 0, None),  # progress reads turned off
    ("Succeeded", 15, None),
    ("Failed", 15, None),
    (None, 15, None),  # never reconciled successfully: nothing to poll for
])
def test_what_is_polled_between_reconciles(phase: str | None, progress_interval: float, want: float | None) -> None:
    assert poll_interval(phase, progress_interval) == want


@pytest.mark.parametrize(("requeue_after", "want"), [
    (None, RESYNC_SECONDS),  # the safety net
    (5, 5),  # a pause or an analysis interval ends on time
    (600, RESYNC_SECONDS),  # never later than the resync
    (-1, 0),
])
def test_the_next_reconcile_is_the_decisions_requeue_at_the_latest_the_resync(
        requeue_after: float | None, want: float) -> None:
    assert reconcile_delay(requeue_after) == want


@pytest.mark.parametrize(("planned", "interval", "want"), [
    (None, 10, 110),  # the first poll of a phase: one interval from now
    (104, 10, 104),  # planned already: a reconcile in between (an event) does not put it off
    (100, 10, 110),  # due now (it just ran): the next one
    (109, 1, 101),  # the phase is polled more often now (Pending -> Running with 1 s progress reads)
    (104, None, None),  # a phase that is not polled
])
def test_events_do_not_put_a_planned_poll_off(planned: float | None, interval: float | None,
                                              want: float | None) -> None:
    assert next_poll(100, planned, interval) == want


@pytest.mark.parametrize(("reconcile_at", "poll_at", "want"), [
    (160, 110, Wake(10, reconcile=False)),  # polls until the reconcile is due
    (160, None, Wake(60, reconcile=True)),
    (105, 110, Wake(5, reconcile=True)),  # the reconcile comes first (and plans the next poll)
    (110, 110, Wake(10, reconcile=True)),
    (90, None, Wake(0, reconcile=True)),  # overdue: at once
])
def test_the_next_wake_is_a_poll_or_the_due_reconcile(reconcile_at: float, poll_at: float | None, want: Wake) -> None:
    assert next_wake(100, reconcile_at, poll_at) == want
