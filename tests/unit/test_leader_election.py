"""Leader election decisions: who acts, as a pure function of the Lease and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmops.operator.runtime.leader import Action, LeaseRecord, decide

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("lease", "want"),
    [
        (None, Action.CREATE),
        (LeaseRecord("me", NOW - timedelta(seconds=3), 15), Action.RENEW),
        (LeaseRecord("me", NOW - timedelta(seconds=60), 15), Action.RENEW),  # ours even if late
        (LeaseRecord("other", NOW - timedelta(seconds=3), 15), Action.WAIT),
        (LeaseRecord("other", NOW - timedelta(seconds=14), 15), Action.WAIT),
        (LeaseRecord("other", NOW - timedelta(seconds=15), 15), Action.TAKE_OVER),  # expired
        (LeaseRecord(None, NOW - timedelta(seconds=1), 15), Action.TAKE_OVER),  # released at shutdown
        (LeaseRecord("other", None, 15), Action.TAKE_OVER),
    ],
    ids=["no-lease", "ours", "ours-late", "live-other", "almost-expired", "expired", "released", "no-renew-time"],
)
def test_decide(lease: LeaseRecord | None, want: Action) -> None:
    assert decide(lease, "me", NOW) is want
