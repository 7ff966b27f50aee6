"""What the operator does when the API server answers a write with an error.

A conflict, a throttle, a server error or a lost connection passes by itself: the resource is reconciled again
after a backoff of its own (1 s doubling to 60 s, reset by a success; a 429's Retry-After wins). Any other 4xx
will not: it becomes a Ready=False condition with the server's message, retried only at the resync.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes.client import ApiException

from llmops.operator.runtime import api_errors
from llmops.operator.runtime.api_errors import Refused, Retry, backoff, decide
from llmops.operator.runtime.handlers import KINDS, Controller
from llmops.operator.runtime.metrics import OperatorMetrics
from llmops.operator.runtime.schedule import RESYNC_SECONDS
from llmops.operator.settings import KubeRayMode, OperatorSettings, TrafficRouter
from tests.conftest import example

INVALID = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
           "message": 'ConfigMap "shakespeare-data-1" is invalid: metadata.labels: Invalid value: "not a label!"'}


@pytest.mark.parametrize(("status", "want"), [
    (409, Retry(1.0)),  # a conflict: someone wrote in between; read again and retry
    (429, Retry(1.0)),
    (408, Retry(1.0)),
    (500, Retry(1.0)),  # e.g. a failing admission webhook
    (503, Retry(1.0)),
    (504, Retry(1.0)),
    (None, Retry(1.0)),  # no answer: the connection failed
    (400, Refused("ChildBadRequest", "the API server refused a write (HTTP 400 BadRequest): Bad Request")),
    (403, Refused("ChildForbidden", "the API server refused a write (HTTP 403 Forbidden): Forbidden")),
    (404, Refused("ChildNotFound", "the API server refused a write (HTTP 404 NotFound): Not Found")),
    (422, Refused("ChildInvalid", "the API server refused a write (HTTP 422 Invalid): Unprocessable Entity")),
    (418, Refused("ChildRefused", "the API server refused a write (HTTP 418 Refused): I'm a teapot")),
])
def test_what_each_status_becomes(status: int | None, want: Retry | Refused) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 422: "Unprocessable Entity",
               418: "I'm a teapot"}
    assert decide(status, 1, reason=reasons.get(status or 0, "")) == want


def test_the_backoff_doubles_per_failure_up_to_a_minute() -> None:
    assert [backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert decide(503, 4) == Retry(8.0)


def test_a_throttle_waits_as_long_as_the_server_asks() -> None:
    assert decide(429, 1, retry_after_header="7") == Retry(7.0)
    assert decide(429, 3, retry_after_header="0") == Retry(0.0)
    # An HTTP date is not what the API server sends: the own backoff then.
    assert decide(429, 3, retry_after_header="Wed, 21 Oct 2026 07:28:00 GMT") == Retry(4.0)


def test_the_condition_carries_the_servers_own_message() -> None:
    refused = decide(422, 1, body=json.dumps(INVALID), reason="Unprocessable Entity")
    message = f"the API server refused a write (HTTP 422 Invalid): {INVALID['message']}"
    assert refused == Refused("ChildInvalid", message)
    assert api_errors.server_message(b"plain text answer", "Forbidden") == "plain text answer"
    assert api_errors.server_message('{"kind": "Status"}', "Forbidden") == '{"kind": "Status"}'


# --- The controller applies the decision: per-resource backoff, the condition, the Event --------------------


def api_error(status: int, body: dict[str, Any] | None = None, retry_after: str | None = None) -> ApiException:
    error = ApiException(status=status, reason={409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
                                                403: "Forbidden"}.get(status, "Error"))
    error.body = json.dumps(body) if body else None
    error.headers = {"Retry-After": retry_after} if retry_after else {}
    return error


class FakeWriter:
    """Stands in for KubeWriter: each apply answers with the next scripted error (None: success)."""

    def __init__(self, *apply_answers: Exception | None, status_answer: Exception | None = None):
        self.apply_answers = list(apply_answers)
        self.status_answer = status_answer
        self.applied: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def apply(self, obj: dict[str, Any]) -> None:
        answer = self.apply_answers.pop(0) if self.apply_answers else None
        if answer is not None:
            raise answer
        self.applied.append(obj)

    def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        if self.status_answer is not None:
            raise self.status_answer
        self.statuses.append(patch)

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


DATASET = next(k for k in KINDS if k.name == "Dataset")


def dataset_body() -> dict[str, Any]:
    body = example("Dataset")
    body["metadata"].update(namespace="team", uid="u-1", generation=1, resourceVersion="7")
    return body


class Reconciles:
    """One Controller and one Dataset; each call reconciles it once (as its next wake would)."""

    def __init__(self, writer: FakeWriter):
        self.writer, self.metrics = writer, OperatorMetrics()
        settings = OperatorSettings(kuberay=KubeRayMode.OFF, traffic_router=TrafficRouter.REPLICAS,
                                    artifact_root="s3://bucket")
        self.controller = Controller(settings, writer, self.metrics)  # type: ignore[arg-type]

    def run(self, times: int, body: dict[str, Any] | None = None) -> list[float]:
        """Reconcile `times` times; the seconds until the next reconcile after each."""

        async def go() -> list[float]:
            due = []
            for _ in range(times):
                await self.controller.reconcile(DATASET, body or dataset_body(), {}, {})
                due.append(self.controller.reconcile_due_in("Dataset", "team", "shakespeare"))
            return due

        return asyncio.run(go())

    def outcomes(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("llmops_reconcile_total",
                                                       {"kind": "Dataset", "outcome": outcome})
        return value or 0.0


def test_conflicts_back_off_per_resource_and_a_success_starts_again_at_one_second() -> None:
    reconciles = Reconciles(FakeWriter(api_error(409), api_error(409), api_error(409)))
    assert reconciles.run(3) == [pytest.approx(1, abs=0.5), pytest.approx(2, abs=0.5), pytest.approx(4, abs=0.5)]
    assert reconciles.outcomes("retry") == 3 and not reconciles.writer.applied and not reconciles.writer.statuses
    reconciles.run(1)  # the conflict is over: children and status written
    assert reconciles.writer.applied and reconciles.writer.statuses and reconciles.outcomes("success") == 1
    reconciles.writer.apply_answers = [api_error(409)]
    changed = dataset_body()
    changed["metadata"]["generation"] = 2  # a new spec: a new Job to apply, and a new conflict
    assert reconciles.run(1, changed) == [pytest.approx(1, abs=0.5)]  # the backoff started over


def test_a_throttled_write_waits_for_retry_after() -> None:
    assert Reconciles(FakeWriter(api_error(429, retry_after="7"))).run(1) == [pytest.approx(7, abs=0.5)]


def test_a_lost_connection_is_retried_soon() -> None:
    assert Reconciles(FakeWriter(ConnectionRefusedError(111, "Connection refused"))).run(1) == [
        pytest.approx(1, abs=0.5)]


def test_an_invalid_child_is_a_condition_and_an_event_once_and_waits_for_the_resync() -> None:
    reconciles = Reconciles(FakeWriter(api_error(422, INVALID), api_error(422, INVALID)))
    written = reconciles.writer.statuses
    (first_due,) = reconciles.run(1)
    assert first_due == pytest.approx(RESYNC_SECONDS, abs=0.5)
    (ready,) = [c for c in written[0]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "False" and ready["reason"] == "ChildInvalid"
    assert ready["message"] == f"the API server refused a write (HTTP 422 Invalid): {INVALID['message']}"
    assert reconciles.writer.events == [("Warning", "ChildInvalid", ready["message"])]
    # The same refusal again (the resync) changes nothing: no second status write, no second Event.
    body = dataset_body()
    body["status"] = written[0]
    reconciles.run(1, body)
    assert len(written) == 1 and len(reconciles.writer.events) == 1
    assert reconciles.outcomes("error") == 2


def test_a_refusal_whose_condition_cannot_be_written_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    forbidden = api_error(403, {"message": 'configmaps "x" is forbidden: User "op" cannot patch resource'})
    reconciles = Reconciles(FakeWriter(forbidden, status_answer=api_error(403)))
    assert reconciles.run(1) == [pytest.approx(RESYNC_SECONDS, abs=0.5)]
    assert "cannot patch resource" in caplog.text and "could not be written" in caplog.text
