"""docs/argocd/health.lua, run for real in Lua 5.1 (the language of Argo CD's gopher-lua), over status tables."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ROOT

lua51 = pytest.importorskip("lupa.lua51", reason="the `dev` extra installs lupa")

SCRIPT = (ROOT / "docs" / "argocd" / "health.lua").read_text()
# What Argo CD's sandbox leaves out: the script must not need them.
UNSAFE = ("os", "io", "require", "dofile", "loadfile", "load", "loadstring", "package", "debug")


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(hs.status, hs.message) of the script for `obj`, in a fresh Lua VM as Argo CD runs it."""
    lua = lua51.LuaRuntime()
    for name in UNSAFE:
        lua.globals()[name] = None
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(SCRIPT)
    return hs["status"], hs["message"]


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-01T10:00:00Z"}


def resource(kind: str, status: dict[str, Any] | None, generation: int = 2, spec: dict[str, Any] | None = None,
             ) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "llmops.dev/v1alpha1", "kind": kind,
                           "metadata": {"name": "tiny", "namespace": "ns", "generation": generation},
                           "spec": spec or {}}
    if status is not None:
        obj["status"] = {"observedGeneration": 2, **status}
    return obj


SERVING = condition("Ready", "True", "Serving", "revision 2 serves at http://tiny.ns.svc:8000/v1")
ROLLING = condition("Progressing", "True", "RollingOut", "revision 3 at step 1, 10% of traffic")

DEPLOYMENT_CASES = [
    # (what, status, spec, want status, a piece of the want message)
    ("available", {"phase": "Available", "conditions": [SERVING]}, None,
     "Healthy", "revision 2 serves at http://tiny.ns.svc:8000/v1"),
    ("rolling out", {"phase": "Progressing", "conditions": [SERVING, ROLLING]}, None,
     "Progressing", "revision 3 at step 1, 10% of traffic"),
    ("waiting for the gate", {"phase": "Waiting", "conditions": [
        condition("Gated", "False", "WaitingForEvaluation", "Evaluation tiny has not passed yet")]}, None,
     "Progressing", "Waiting: Evaluation tiny has not passed yet"),
    ("paused by inconclusive analysis", {"phase": "Progressing", "conditions": [SERVING, condition(
        "Progressing", "False", "AnalysisInconclusive", "revision 3 at step 1, 10% of traffic")]}, None,
     "Suspended", "Rollout paused (AnalysisInconclusive): revision 3 at step 1"),
    ("paused by the spec", {"phase": "Progressing", "conditions": [SERVING, condition(
        "Progressing", "False", "Paused", "revision 3 at step 2, 50% of traffic")]}, {"paused": True},
     "Suspended", "Rollout paused (Paused): revision 3 at step 2, 50% of traffic; `llmops rollout promote`"),
    ("spec.paused before the condition says so", {"phase": "Progressing", "conditions": [SERVING, ROLLING]},
     {"paused": True}, "Suspended", "Rollout paused (Paused)"),
    ("spec.paused with nothing rolling out", {"phase": "Available", "conditions": [SERVING]}, {"paused": True},
     "Healthy", "revision 2 serves"),
    ("degraded", {"phase": "Degraded", "conditions": [SERVING, condition(
        "Degraded", "True", "RolledBack", "errorRate 0.05 > 0.011 in 2 checks")]}, None,
     "Degraded", "Degraded: errorRate 0.05 > 0.011 in 2 checks"),
    ("rolling back", {"phase": "RollingBack", "conditions": [condition(
        "Degraded", "True", "Aborted", "aborted by `llmops rollout abort`")]}, None,
     "Degraded", "RollingBack: aborted by `llmops rollout abort`"),
    ("failed", {"phase": "Failed", "conditions": [condition("Ready", "False", "Starting", "pods never ready")]}, None,
     "Degraded", "Failed: pods never ready"),
    ("failed without conditions", {"phase": "Failed"}, None, "Degraded", "Failed: the newest revision failed"),
    ("no phase yet", {}, None, "Progressing", "Waiting for the operator"),
]


@pytest.mark.parametrize(("status", "spec", "want", "message"), [case[1:] for case in DEPLOYMENT_CASES],
                         ids=[case[0] for case in DEPLOYMENT_CASES])
def test_deployment(status: dict[str, Any], spec: dict[str, Any] | None, want: str, message: str) -> None:
    got, text = health(resource("Deployment", status, spec=spec))
    assert got == want
    assert message in text


@pytest.mark.parametrize("kind", ["Deployment", "Dataset", "PretrainJob", "FineTune", "Evaluation"])
def test_a_status_of_an_older_generation_is_progressing_whatever_it_says(kind: str) -> None:
    phase = "Available" if kind == "Deployment" else "Succeeded"
    assert health(resource(kind, {"phase": phase}, generation=3)) == (
        "Progressing", "Waiting for the operator to observe generation 3 (status is of generation 2)")
    no_observed = resource(kind, {"phase": phase})
    del no_observed["status"]["observedGeneration"]
    assert health(no_observed)[1].endswith("(status is of generation none)")


@pytest.mark.parametrize("kind", ["Deployment", "Dataset", "PretrainJob", "FineTune", "Evaluation"])
def test_no_status_yet_is_progressing(kind: str) -> None:
    assert health(resource(kind, None)) == ("Progressing", "Waiting for the operator to report status")


def workload_status(phase: str, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    """What the workload reconcilers write: Succeeded, Failed, Progressing and Ready with one reason and message."""
    truth = {"Succeeded": phase == "Succeeded", "Failed": phase == "Failed",
             "Progressing": phase not in ("Succeeded", "Failed"), "Ready": phase == "Succeeded"}
    return {"phase": phase, "conditions": [condition(t, str(v), reason, message) for t, v in truth.items()], **extra}


WORKLOAD_CASES = [
    ("succeeded", "Dataset", workload_status("Succeeded", "Completed", "wrote 12 shards"),
     "Healthy", "wrote 12 shards"),
    ("failed", "PretrainJob", workload_status("Failed", "BackoffLimitExceeded", "rank 0 exited 1: CUDA OOM"),
     "Degraded", "rank 0 exited 1: CUDA OOM"),
    ("running", "FineTune", workload_status("Running", "Running", "step 40/100"), "Progressing", "step 40/100"),
    ("pending", "PretrainJob", workload_status("Pending", "QuotaExceeded", "exceeded quota: gpu"),
     "Progressing", "exceeded quota: gpu"),
    ("waiting for a reference", "FineTune", {"phase": "Waiting", "waitingFor": "PretrainJob tiny"},
     "Progressing", "Waiting for PretrainJob tiny"),
    ("evaluation passed", "Evaluation", workload_status("Succeeded", "Passed", "all 3 thresholds held",
                                                        verdict="Passed"), "Healthy", "all 3 thresholds held"),
    ("evaluation failed its thresholds", "Evaluation", {
        "phase": "Succeeded", "verdict": "Failed",
        "conditions": [condition("Passed", "False", "ThresholdFailed", "perplexity 512 > 400")]},
     "Degraded", "Verdict Failed: perplexity 512 > 400"),
    ("evaluation run failed", "Evaluation", workload_status("Failed", "Error", "model not found"),
     "Degraded", "model not found"),
    ("no phase yet", "Dataset", {}, "Progressing", "Pending"),
]


@pytest.mark.parametrize(("kind", "status", "want", "message"), [case[1:] for case in WORKLOAD_CASES],
                         ids=[case[0] for case in WORKLOAD_CASES])
def test_workload(kind: str, status: dict[str, Any], want: str, message: str) -> None:
    got, text = health(resource(kind, status))
    assert got == want
    assert message in text


def test_every_answer_is_one_argo_cd_knows() -> None:
    answers = {health(resource("Deployment", case[1], spec=case[2]))[0] for case in DEPLOYMENT_CASES}
    answers |= {health(resource(case[1], case[2]))[0] for case in WORKLOAD_CASES}
    assert answers <= {"Healthy", "Progressing", "Degraded", "Suspended", "Missing"}
    assert answers >= {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_the_install_guide_names_a_key_for_every_kind() -> None:
    from llmops.operator.api.v1alpha1 import KINDS

    guide = (ROOT / "docs" / "argocd.md").read_text()
    for kind in KINDS:
        assert f"resource.customizations.health.llmops.dev_{kind}" in guide
