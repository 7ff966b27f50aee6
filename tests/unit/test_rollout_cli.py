"""`llmops rollout`: what each command asks for (or why it refuses), how a status reads, when a watch ends."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from llmops.operator import cli
from llmops.operator.api.v1alpha1 import rollout_commands as commands
from llmops.operator.rollout_cli import (
    EXIT_DONE,
    EXIT_FAILED,
    RolloutError,
    duration,
    plan,
    render,
    render_status,
    watch_result,
)
from tests.conftest import patched

T0 = "2026-12-01T10:00:00Z"
TOKEN = "2026-12-01T10:05:00.000001+00:00"


def condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": T0,
            "observedGeneration": 4}


def revision(number: int, outcome: str, *, deployed: str | None = None, generation: int = 4,
             reason: str | None = None) -> dict[str, Any]:
    out = {"revision": number, "digest": f"sha256:{number}", "modelUri": f"s3://models/tiny/run-{number}",
           "image": "ghcr.io/llmops/serve:1", "evaluation": f"tiny-eval-{number}", "outcome": outcome,
           "generation": generation}
    if deployed:
        out["deployedAt"] = deployed
    if reason:
        out["reason"] = reason
    return out


CANARY = {
    "revision": 3, "previousRevision": 2, "step": 1, "weight": 10, "desiredWeight": 50, "effectiveWeight": 8,
    "startedAt": T0, "failedChecks": 1, "inconclusiveChecks": 0, "nextCheckAt": "2026-12-01T10:06:00Z",
    "lastCheck": {
        "time": "2026-12-01T10:05:00Z", "verdict": "Failed", "requests": 42, "stableRequests": 380,
        "source": "prometheus", "message": "errorRate 0.05 > 0.011",
        "metrics": [
            {"metric": "errorRate", "value": 0.05, "stable": 0.001, "threshold": 0.011, "passed": False},
            {"metric": "ttftP99Ms", "value": 812.5, "stable": 790.0, "threshold": 2000, "passed": True},
            {"metric": "latencyP99Ms"},
        ],
    },
}

ROLLING_OUT: dict[str, Any] = {
    "phase": "Progressing", "observedGeneration": 4, "replicas": 3, "readyReplicas": 3,
    "url": "http://tiny.ns.svc:8000/v1", "traffic": "replicas", "currentRevision": 2,
    "conditions": [  # not in the order the CLI shows them
        condition("Degraded", "False", "Healthy", "no rollout failed at this generation"),
        condition("Progressing", "True", "RollingOut", "revision 3 at step 2, 10% of traffic"),
        condition("Ready", "True", "Serving", "revision 2 serves at http://tiny.ns.svc:8000/v1"),
        condition("Gated", "True", "VerdictPassed", "Evaluation tiny-eval-3 passed"),
    ],
    "canary": CANARY,
    "history": [revision(1, "Superseded", deployed="2026-11-01T09:00:00Z"),
                revision(2, "Stable", deployed="2026-11-20T09:00:00Z"), revision(3, "Canary")],
}

AVAILABLE: dict[str, Any] = {
    "phase": "Available", "observedGeneration": 4, "currentRevision": 2,
    "conditions": [condition("Ready", "True", "Serving", "revision 2 serves")],
    "history": [revision(1, "Superseded", deployed="2026-11-01T09:00:00Z"),
                revision(2, "Stable", deployed="2026-11-20T09:00:00Z")],
}


def deployment(status: dict[str, Any] | None, generation: int = 4) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "llmops.dev/v1alpha1", "kind": "Deployment",
                           "metadata": {"name": "tiny", "namespace": "ns", "generation": generation,
                                        "resourceVersion": "7"},
                           "spec": {"canary": {"steps": [{"weight": 10}, {"weight": 50}, {"weight": 100}]}}}
    if status is not None:
        obj["status"] = copy.deepcopy(status)
    return obj


# --- status, as a person reads it ----------------------------------------------------------------------------

class TestRender:
    def test_a_rollout_in_progress_shows_phase_revisions_canary_conditions_check_and_history(self) -> None:
        text = render(deployment(ROLLING_OUT))
        lines = text.splitlines()
        assert lines[0] == "Deployment tiny (namespace ns, generation 4)"
        assert "Phase:     Progressing" in lines
        assert "Stable:    revision 2" in lines
        assert "Canary:    revision 3, step 2 of 3, weight 10% (desired 50%, effective 8%)" in lines
        assert "Previous:  revision 2 (rolled back to on failure)" in lines
        assert "Checks:    1 failed, 0 inconclusive; next at 2026-12-01T10:06:00Z" in lines
        assert "Replicas:  3 ready of 3" in lines
        conditions = text.split("Conditions:\n")[1].split("\n\n")[0].splitlines()
        assert [line.split()[0] for line in conditions] == ["TYPE", "Ready", "Gated", "Progressing", "Degraded"]
        assert "  Progressing  True    RollingOut     revision 3 at step 2, 10% of traffic" in conditions
        check = text.split("Last analysis check: ")[1].split("\n\n")[0]
        assert check == (
            "Failed at 2026-12-01T10:05:00Z, 42 canary requests (stable 380), from prometheus\n"
            "  METRIC        CANARY  STABLE  THRESHOLD  PASSED\n"
            "  errorRate     0.05    0.001   0.011      no\n"
            "  ttftP99Ms     812.5   790     2000       yes\n"
            "  latencyP99Ms  -       -       -          -\n"
            "  errorRate 0.05 > 0.011")
        history = text.split("History:\n")[1].splitlines()
        assert history[0].split() == ["REVISION", "MODEL", "URI", "EVALUATION", "OUTCOME", "DEPLOYED", "AT",
                                      "REASON"]
        assert history[1].split() == ["1", "s3://models/tiny/run-1", "tiny-eval-1", "Superseded",
                                      "2026-11-01T09:00:00Z"]
        assert history[3].split() == ["3", "s3://models/tiny/run-3", "tiny-eval-3", "Canary", "-"]

    def test_a_paused_or_promoted_canary_says_what_resumes_it(self) -> None:
        paused = render_status(patched(ROLLING_OUT, {"canary": {"pausedReason": "AnalysisInconclusive"}}))
        assert "Paused:    AnalysisInconclusive (`llmops rollout promote` resumes, `abort` rolls back)" in paused
        promoted = render_status(patched(ROLLING_OUT, {"canary": {"promotedAt": "2026-12-01T10:07:00Z"}}))
        assert "Promoted:  2026-12-01T10:07:00Z (post-promotion analysis" in promoted

    def test_without_an_effective_weight_or_spec_the_canary_line_is_shorter(self) -> None:
        status = patched(ROLLING_OUT, {"canary": {"effectiveWeight": None, "desiredWeight": 10}})
        assert "Canary:    revision 3, step 2, weight 10%\n" in render_status(status)

    def test_a_status_behind_the_spec_says_so(self) -> None:
        text = render(deployment(AVAILABLE, generation=5))
        assert "this status is of generation 4; the operator has not acted on generation 5 yet" in text

    def test_a_rolled_back_revision_shows_its_reason(self) -> None:
        status = patched(AVAILABLE, {"phase": "Degraded", "history": [
            *AVAILABLE["history"], revision(3, "RolledBack", reason="errorRate 0.05 > 0.011 twice")]})
        last = render_status(status).splitlines()[-1]
        assert re.split(r"\s{2,}", last.strip()) == ["3", "s3://models/tiny/run-3", "tiny-eval-3", "RolledBack", "-",
                                                   "errorRate 0.05 > 0.011 twice"]

    def test_no_status_yet_says_the_operator_has_not_reconciled_it(self) -> None:
        assert "no status yet: the operator has not reconciled" in render(deployment(None))


# --- what each command asks for, or why it refuses --------------------------------------------------------------

class TestPlan:
    def test_promote_and_abort_act_on_the_current_canary(self) -> None:
        promote = plan("promote", deployment(ROLLING_OUT), TOKEN)
        assert (promote.key, promote.value) == (commands.PROMOTE, TOKEN)
        assert "promote revision 3" in promote.summary
        abort = plan("abort", deployment(ROLLING_OUT), TOKEN)
        assert (abort.key, abort.value) == (commands.ABORT, TOKEN)
        assert "back to revision 2" in abort.summary

    @pytest.mark.parametrize("command", ["promote", "abort"])
    def test_promote_and_abort_without_a_canary_refuse(self, command: str) -> None:
        with pytest.raises(RolloutError, match=f"tiny has no canary to {command}: revision 2 serves all traffic "
                                               r"\(phase Available\)"):
            plan(command, deployment(AVAILABLE), TOKEN)

    def test_promote_of_a_promoted_canary_refuses_but_abort_still_rolls_it_back(self) -> None:
        promoted = deployment(patched(ROLLING_OUT, {"canary": {"promotedAt": "2026-12-01T10:07:00Z"}}))
        with pytest.raises(RolloutError, match="promoted already"):
            plan("promote", promoted, TOKEN)
        assert plan("abort", promoted, TOKEN).key == commands.ABORT

    def test_retry_rolls_out_again_what_failed_at_this_generation(self) -> None:
        degraded = patched(AVAILABLE, {"phase": "Degraded", "history": [
            *AVAILABLE["history"], revision(3, "RolledBack", reason="analysis failed")]})
        request = plan("retry", deployment(degraded), TOKEN)
        assert (request.key, request.value) == (commands.RETRY, TOKEN)
        assert "retry revision 3 (RolledBack: analysis failed)" == request.summary

    @pytest.mark.parametrize(("status", "generation", "why"), [
        (AVAILABLE, 4, "nothing to retry: no revision was RolledBack, Aborted or Failed at generation 4"),
        (patched(AVAILABLE, {"history": [*AVAILABLE["history"], revision(3, "Aborted", generation=3)]}), 4,
         "revision 3 was Aborted at generation 3; the spec changed since"),
        (patched(AVAILABLE, {"history": [*AVAILABLE["history"], revision(3, "Gated", reason="accuracy 0.2 < 0.5")]}),
         4, "revision 3 of tiny was Gated: its Evaluation did not pass .accuracy 0.2 < 0.5.; retry does not skip"),
        (ROLLING_OUT, 4, "revision 3 of tiny is rolling out now; nothing to retry"),
    ])
    def test_retry_with_nothing_to_retry_refuses(self, status: dict[str, Any], generation: int, why: str) -> None:
        with pytest.raises(RolloutError, match=why):
            plan("retry", deployment(status, generation), TOKEN)

    def test_undo_defaults_to_the_revision_that_served_before_the_stable(self) -> None:
        # After an undo, numbers are not the order of serving: revision 2 took all traffic last before 4.
        status = patched(AVAILABLE, {"currentRevision": 4, "history": [
            revision(1, "Superseded", deployed="2026-11-01T09:00:00Z"),
            revision(2, "Superseded", deployed="2026-11-25T09:00:00Z"),
            revision(3, "Superseded", deployed="2026-11-10T09:00:00Z"),
            revision(4, "Stable", deployed="2026-11-30T09:00:00Z"),
            revision(5, "Superseded"),  # replaced mid-rollout: it never took all traffic
        ]})
        request = plan("undo", deployment(status), TOKEN)
        assert (request.key, request.value) == (commands.UNDO, f"2@{TOKEN}")
        assert commands.parse_undo(request.value) == (2, TOKEN)

    def test_undo_to_a_named_revision(self) -> None:
        request = plan("undo", deployment(AVAILABLE), TOKEN, to_revision=1)
        assert request.value == f"1@{TOKEN}" and "undo to revision 1 (s3://models/tiny/run-1)" in request.summary

    @pytest.mark.parametrize(("status", "to_revision", "why"), [
        (patched(AVAILABLE, {"history": [revision(2, "Stable", deployed=T0)]}), None,
         "tiny has no earlier revision to undo to: .* \\(revisions kept: 2\\); name one with --to-revision N"),
        (AVAILABLE, 7, "revision 7 is not in the history of tiny \\(revisions kept: 1, 2; spec.revisionHistoryLimit"),
        (AVAILABLE, 2, "revision 2 is the stable revision of tiny already: nothing to undo"),
        (ROLLING_OUT, 3, "revision 3 of tiny is rolling out now"),
        (patched(AVAILABLE, {"history": [*AVAILABLE["history"], revision(3, "Gated")]}), 3,
         "revision 3 of tiny never passed its gate"),
    ])
    def test_undo_that_makes_no_sense_refuses(self, status: dict[str, Any], to_revision: int | None,
                                              why: str) -> None:
        with pytest.raises(RolloutError, match=why):
            plan("undo", deployment(status), TOKEN, to_revision=to_revision)


# --- when `status --watch` is done --------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "generation", "want"), [
    (AVAILABLE, 4, EXIT_DONE),
    (patched(AVAILABLE, {"canary": {**CANARY, "promotedAt": T0}}), 4, None),  # post-promotion analysis still runs
    (AVAILABLE, 5, None),  # the spec changed: this status says nothing about the new revision yet
    (ROLLING_OUT, 4, None),
    (patched(AVAILABLE, {"phase": "RollingBack"}), 4, None),
    (patched(AVAILABLE, {"phase": "Degraded"}), 4, EXIT_FAILED),
    (patched(AVAILABLE, {"phase": "Failed"}), 4, EXIT_FAILED),
    (patched(AVAILABLE, {"phase": "Degraded"}), 5, None),
    (None, 4, None),
])
def test_watch_ends_once_available_without_a_canary_or_degraded(status: dict[str, Any] | None, generation: int,
                                                                want: int | None) -> None:
    assert watch_result(deployment(status, generation)) == want


# --- the annotation values ------------------------------------------------------------------------------------------

def test_command_values_round_trip_through_parse_undo() -> None:
    token = commands.new_token(datetime(2026, 12, 1, 10, 5, 0, 1, tzinfo=UTC))
    assert token == TOKEN
    assert commands.command_value(token) == TOKEN
    assert commands.parse_undo(commands.command_value(token, revision=12)) == (12, TOKEN)
    assert commands.parse_undo("3@my@token") == (3, "my@token")  # only the first @ separates
    assert commands.KEYS == ("llmops.dev/rollout-promote", "llmops.dev/rollout-abort", "llmops.dev/rollout-retry",
                             "llmops.dev/rollout-undo")


@pytest.mark.parametrize("value", ["", "3", "3@", "@tok", "x@tok", "0@tok", "-1@tok", " 3@tok"])
def test_parse_undo_rejects_what_is_not_revision_at_token_and_names_the_form(value: str) -> None:
    with pytest.raises(commands.CommandValueError) as error:
        commands.parse_undo(value)
    assert "llmops.dev/rollout-undo must be '<revision>@<token>'" in str(error.value)
    assert repr(value) in str(error.value) and "--to-revision N" in str(error.value)


def test_tokens_need_an_aware_clock_and_revisions_start_at_one() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        commands.new_token(datetime(2026, 12, 1))
    with pytest.raises(ValueError, match="numbered from 1"):
        commands.command_value(TOKEN, revision=0)
    with pytest.raises(ValueError, match="must not be empty"):
        commands.command_value("")


# --- arguments ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "why"), [
    (["rollout"], "the following arguments are required: COMMAND"),
    (["rollout", "promote"], "the following arguments are required: NAME"),
    (["rollout", "undo", "tiny", "--to-revision", "0"], "revisions are numbered 1, 2, ..."),
    (["rollout", "undo", "tiny", "--to-revision", "two"], "revisions are numbered 1, 2, ..."),
    (["rollout", "status", "tiny", "--watch", "--timeout", "soon"], "expected a duration such as 30s, 5m or 1h"),
    (["rollout", "status", "tiny", "--watch", "--timeout", "-5"], "a duration is a finite number of seconds"),
    (["rollout", "status", "tiny", "-o", "yaml"], "invalid choice: 'yaml'"),
    (["rollout", "promote", "tiny", "--to-revision", "1"], "unrecognized arguments: --to-revision 1"),
])
def test_argument_errors_exit_2_naming_the_argument(argv: list[str], why: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert why in capsys.readouterr().err


def test_timeout_without_watch_is_refused_before_any_cluster_is_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rollout", "status", "tiny", "--timeout", "5s", "--kubeconfig", "/nonexistent"]) == 2
    assert "--timeout needs --watch" in capsys.readouterr().err


def test_a_missing_kubeconfig_names_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rollout", "promote", "tiny", "--kubeconfig", "/nonexistent/kubeconfig"]) == 1
    err = capsys.readouterr().err
    assert "llmops rollout promote: cannot load a kubeconfig" in err and "--kubeconfig PATH" in err


@pytest.mark.parametrize(("text", "want"), [("90", 90.0), ("30s", 30.0), ("1m30s", 90.0), ("0", 0.0), ("1.5", 1.5)])
def test_timeouts_are_seconds_or_go_durations(text: str, want: float) -> None:
    assert duration(text) == want


def test_a_status_this_version_cannot_read_points_to_the_raw_view() -> None:
    newer = deployment(patched(AVAILABLE, {"phase": "Hibernating"}))
    with pytest.raises(RolloutError, match="does not match this llmops version's API .*read it raw with `-o json`"):
        render(newer)
    with pytest.raises(RolloutError, match="does not match"):
        plan("promote", newer, TOKEN)
