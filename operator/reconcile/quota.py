"""Pods a Job cannot create: the Job controller's FailedCreate Events, read into a condition reason and message.

A Job whose pods are refused at admission (a ResourceQuota, Pod Security, a webhook) shows nothing in its own
status: it simply has no pods, and the Job controller retries with a growing delay. Only the Warning Events it
records on the Job (reason FailedCreate) say why. Reading Events costs a list call, so the Kopf layer reads them
only for a Job that `needs_event_read` says is stuck, and hands them in as observed children (kind "Event").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from .times import parse_time

FAILED_CREATE = "FailedCreate"
EVENT_GRACE = timedelta(seconds=5)
"""A Job younger than this without pods is normal: the Job controller has not got round to it yet."""
FINISHED_OR_SUSPENDED = ("SuccessCriteriaMet", "FailureTarget", "Complete", "Failed", "Suspended")
"""Job conditions after which a Job has no pods on purpose (Kubernetes >= 1.31 sets the first two first)."""


def _finished_or_suspended(job: dict[str, Any]) -> bool:
    if job.get("spec", {}).get("suspend"):
        return True
    return any(c.get("type") in FINISHED_OR_SUSPENDED and c.get("status") == "True"
               for c in job.get("status", {}).get("conditions", []))


def needs_event_read(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> bool:
    """True when a Job should have pods by now and has none, so only its Events can say why."""
    created = parse_time(job["metadata"].get("creationTimestamp"))
    return not pods and not _finished_or_suspended(job) and created is not None and now - created >= EVENT_GRACE


def event_field_selector(job: dict[str, Any]) -> str:
    """The list call's field selector: this Job's (by uid, not an older one of the same name) FailedCreate Events."""
    meta = job["metadata"]
    return (f"involvedObject.kind=Job,involvedObject.name={meta['name']},involvedObject.uid={meta.get('uid', '')},"
            f"reason={FAILED_CREATE}")


def _seen(event: dict[str, Any]) -> datetime:
    """When an Event was last observed: repeated Events are aggregated into one object with a newer timestamp."""
    stamps = (event.get("series", {}).get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
              event.get("metadata", {}).get("creationTimestamp"))
    return next((t for s in stamps if (t := parse_time(s)) is not None), datetime.min.replace(tzinfo=UTC))


def creation_failure(events: list[dict[str, Any]], job: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) from the newest FailedCreate Event of `job`; None when there is none.

    A quota refusal becomes QuotaExceeded with the API server's own words, which name the quota and what was
    requested, used and limited (e.g. "exceeded quota: team, requested: pods=1, used: pods=4, limited: pods=4").
    """
    meta = job["metadata"]
    mine = [e for e in events if e.get("reason") == FAILED_CREATE
            and e.get("involvedObject", {}).get("name") == meta["name"]
            and e.get("involvedObject", {}).get("uid") in (None, meta.get("uid"))]
    if not mine:
        return None
    cause = max(mine, key=_seen).get("message", "").strip().removeprefix("Error creating: ")
    reason = "QuotaExceeded" if "exceeded quota" in cause or "failed quota" in cause else "PodCreationFailed"
    return reason, f"Job {meta['name']} cannot create its pods: {cause}"
