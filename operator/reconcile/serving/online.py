"""The online quality check: an Evaluation of the canary's live endpoint at each step (no peer has one).

A Job runs `llmops-evaluate` against the canary revision's own Service (OpenAI-compatible, ours or vLLM's), with the
tasks and thresholds of spec.canary.analysis.onlineEvaluation. Its verdict comes back as every Evaluation's does
(the result channel: the pod's termination message); a Failed verdict is a failed analysis check, with the
failing metrics.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1.common import NodePool, Output
from llmops.operator.api.v1alpha1.deployment import AnalysisCheck, CanaryStatus, Deployment, MetricCheck, Verdict
from llmops.operator.backends import kubernetes
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.evaluate import EvalJobConfig
from llmops.trainer.config.layout import results_uri
from llmops.trainer.config.result import WorkloadResult

from ..defaults import default_output
from ..evaluation import ENTRYPOINT
from ..jobs import job_and_pods, job_state
from ..training import training_plan
from .revisions import revision_name

METRIC = "onlineEvaluation"


def _suffix(state: CanaryStatus) -> str:
    # <name> (<= 50) + -r<N>-oe<step>-<attempt>-<generation> stays within a label value's 63 characters.
    return f"r{state.revision}-oe{state.step}-{state.online_attempts}"


def children(deployment: Deployment, state: CanaryStatus, settings: OperatorSettings) -> list[dict[str, Any]]:
    """ConfigMap and Job of the current step's online Evaluation of the canary's endpoint."""
    spec = deployment.spec
    assert spec.canary is not None and spec.canary.analysis is not None
    online = spec.canary.analysis.online_evaluation
    assert online is not None
    meta = deployment.metadata
    url = f"http://{revision_name(deployment, state.revision)}.{meta.namespace}.svc:{spec.server.port}/v1"
    output = f"{default_output(deployment, settings)}/online/{_suffix(state)}"
    config = EvalJobConfig.model_validate({
        "endpoint": {"url": url, "model": spec.server.served_model_name or meta.name},
        "tasks": [{**t.model_dump(exclude={"dataset", "uri"}), "data_uri": t.uri} for t in online.tasks],
        "thresholds": [t.model_dump() for t in online.thresholds], "output_uri": output,
        "name": f"{meta.name}-revision-{state.revision}-step-{state.step + 1}"})
    plan = training_plan(deployment, _suffix(state), ENTRYPOINT, config.to_wire(), pool=NodePool(),
                         image=spec.image.model_copy(update={"image": None}), backoff_limit=1, output=Output(),
                         reads={f"task:{t.name}": t.uri or "" for t in online.tasks}, writes=output,
                         artifact_uri=results_uri(output), settings=settings, distributed=False)
    return kubernetes.desired_children(deployment, plan, settings)


def result(desired: list[dict[str, Any]], observed: dict[str, list[dict[str, Any]]], state: CanaryStatus,
           now: datetime) -> AnalysisCheck | None:
    """The check the finished Job amounts to; None while it runs."""
    job_name = desired[-1]["metadata"]["name"]
    job, pods = job_and_pods(observed, job_name)
    run = job_state(job, job_name, pods)
    if run.phase.value == "Failed":
        return AnalysisCheck(time=now, verdict=Verdict.FAILED, source="onlineEvaluation", metrics=[
            MetricCheck(metric=METRIC, passed=False)], message=f"online evaluation could not run: {run.message}")
    if run.phase.value != "Succeeded":
        return None
    reported = kubernetes.result_from_pods(pods) or WorkloadResult()
    failing = [f"{r.task}/{r.metric.value} {r.value} (needs {r.threshold})" for r in reported.results
               if r.passed is False]
    passed = reported.verdict == "Passed"
    metrics = [MetricCheck(metric=f"{r.task}/{r.metric.value}", value=r.value, passed=r.passed)
               for r in reported.results][:16]
    message = ("online evaluation passed" if passed else "online evaluation failed: " + ("; ".join(failing)
               or "no verdict reported"))
    return AnalysisCheck(time=now, verdict=Verdict.PASSED if passed else Verdict.FAILED, source="onlineEvaluation",
                         metrics=metrics, message=message)
