"""Pods refused at creation (a ResourceQuota, admission): the Job's FailedCreate Events become the condition."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.api.v1alpha1.dataset import DatasetStatus
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import dataset
from llmops.operator.reconcile.conditions import get_condition
from llmops.operator.reconcile.jobs import job_state
from llmops.operator.reconcile.quota import creation_failure, event_field_selector, needs_event_read
from tests.unit.test_reconcile import NOW, SETTINGS, make_dataset, pod

JOB = "shakespeare-data-1"
QUOTA = ('Error creating: pods "shakespeare-data-1-0-x7k2p" is forbidden: exceeded quota: team-quota, '
         "requested: pods=1, used: pods=4, limited: pods=4")


def job(created: datetime = NOW - timedelta(seconds=30), uid: str = "job-uid", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": JOB, "uid": uid, "creationTimestamp": created.isoformat().replace("+00:00", "Z")},
            "spec": extra.pop("spec", {}), "status": extra}


def event(message: str, seen: str = "2026-11-24T11:59:50Z", uid: str = "job-uid",
          reason: str = "FailedCreate") -> dict[str, Any]:
    return {"kind": "Event", "type": "Warning", "reason": reason, "message": message, "lastTimestamp": seen,
            "involvedObject": {"kind": "Job", "name": JOB, "uid": uid}}


class TestCreationFailure:
    def test_a_quota_refusal_names_the_quota_and_the_numbers(self) -> None:
        reason, message = creation_failure([event(QUOTA)], job())  # type: ignore[misc]
        assert reason == "QuotaExceeded"
        assert message.startswith(f"Job {JOB} cannot create its pods: pods ")
        assert "exceeded quota: team-quota, requested: pods=1, used: pods=4, limited: pods=4" in message
        assert "Error creating" not in message

    def test_the_newest_event_wins(self) -> None:
        older = event("Error creating: pods is forbidden: violates PodSecurity", "2026-11-24T11:50:00Z")
        assert creation_failure([event(QUOTA, "2026-11-24T11:59:00Z"), older], job())[0] == "QuotaExceeded"  # type: ignore[index]
        assert creation_failure([event(QUOTA, "2026-11-24T11:40:00Z"), older], job())[0] == "PodCreationFailed"  # type: ignore[index]

    def test_a_missing_request_under_a_cpu_quota_is_a_quota_problem_too(self) -> None:
        missing = "Error creating: pods \"p\" is forbidden: failed quota: cpu-quota: must specify requests.cpu"
        assert creation_failure([event(missing)], job())[0] == "QuotaExceeded"  # type: ignore[index]

    @pytest.mark.parametrize("other", [event(QUOTA, uid="older-job-of-the-same-name"),
                                       event(QUOTA, reason="SuccessfulCreate")])
    def test_events_of_an_older_job_or_other_reasons_are_ignored(self, other: dict[str, Any]) -> None:
        assert creation_failure([other], job()) is None


class TestWhenEventsAreRead:
    def test_only_a_job_past_its_grace_time_without_pods(self) -> None:
        assert needs_event_read(job(), [], NOW)
        assert not needs_event_read(job(created=NOW - timedelta(seconds=1)), [], NOW)  # the controller is on it
        assert not needs_event_read(job(), [pod(JOB)], NOW)

    @pytest.mark.parametrize("state", [
        {"conditions": [{"type": "Complete", "status": "True"}]},
        {"conditions": [{"type": "Failed", "status": "True"}]},
        {"spec": {"suspend": True}},  # Kueue has not admitted it: no pods is expected
    ])
    def test_never_for_a_finished_or_suspended_job(self, state: dict[str, Any]) -> None:
        assert not needs_event_read(job(**state), [], NOW)

    def test_the_list_call_asks_for_this_jobs_failed_creates_only(self) -> None:
        assert event_field_selector(job()) == (f"involvedObject.kind=Job,involvedObject.name={JOB},"
                                               "involvedObject.uid=job-uid,reason=FailedCreate")


class TestJobState:
    def test_no_pods_and_a_quota_event_is_pending_quota_exceeded(self) -> None:
        state = job_state(job(active=0), JOB, [], [event(QUOTA)])
        assert (state.phase, state.reason, state.stalled) == (Phase.PENDING, "QuotaExceeded", True)
        assert "team-quota" in state.message

    def test_once_pods_exist_the_old_refusal_no_longer_matters(self) -> None:
        state = job_state(job(active=1), JOB, [pod(JOB)], [event(QUOTA)])
        assert state.reason == "PodsPending" and not state.stalled


def test_the_dataset_status_says_quota_exceeded_and_clears_when_pods_appear() -> None:
    resource = make_dataset()
    refused = reconcile(dataset, resource, {"Job": [job(active=0)], "Event": [event(QUOTA)]}, {}, SETTINGS, NOW)
    assert refused.status["phase"] == "Pending"
    conditions = {c["type"]: c for c in refused.status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "QuotaExceeded")
    assert (conditions["Progressing"]["status"], conditions["Progressing"]["reason"]) == ("False", "QuotaExceeded")
    assert "exceeded quota: team-quota" in conditions["Ready"]["message"]
    assert [(e.type, e.reason) for e in refused.events] == [("Warning", "QuotaExceeded")]

    resource.status = DatasetStatus.model_validate(refused.status)
    again = reconcile(dataset, resource, {"Job": [job(active=0)], "Event": [event(QUOTA)]}, {}, SETTINGS, NOW)
    assert again.status == refused.status and not again.events  # level-based: nothing new, nothing written
    moved = reconcile(dataset, resource, {"Job": [job(active=1)], "Pod": [pod(JOB)], "Event": [event(QUOTA)]}, {},
                              SETTINGS, NOW + timedelta(seconds=20))
    conditions_after = DatasetStatus.model_validate(moved.status).conditions
    ready, progressing = get_condition(conditions_after, "Ready"), get_condition(conditions_after, "Progressing")
    assert ready is not None and ready.reason == "PodsPending"
    assert progressing is not None and progressing.status == "True"
    assert progressing.last_transition_time == NOW + timedelta(seconds=20)  # it flipped back
