"""Evaluation: wait for the model (and baseline, and task datasets), run one scoring pod, read the verdict.

A model given as an endpoint is not waited for: the pod scores it over HTTP, with the API key (if any) from
its Secret in the container's environment, never in the config.

The workload writes its verdict and results as JSON to the pod's termination message, so the operator
learns them from the pod status, with no access to the artifact store.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from llmops.operator.api.v1alpha1 import Evaluation
from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.api.v1alpha1.evaluation import EvaluationStatus, MetricResult, ModelEndpoint, Verdict
from llmops.operator.runtime.settings import OperatorSettings
from llmops.trainer.config.evaluate import EvalJobConfig

from .conditions import set_condition
from .dependencies import dependency
from .jobs import job_and_pods
from .storage import local_path
from .training import default_output, model_reference, model_run, resolve_model, single_pod_children
from .workload import Decision, Event, run_decision, waiting

ENTRYPOINT = "llmops-evaluate"
API_KEY_ENV = "LLMOPS_ENDPOINT_API_KEY"
"""The container variable the endpoint's API key reaches the workload in (from spec.model.endpoint's Secret)."""


def references(evaluation: Evaluation) -> list[tuple[str, str]]:
    spec = evaluation.spec
    out = [target] if (target := model_reference(spec.model)) else []
    if spec.baseline and (target := model_reference(spec.baseline)):
        out.append(target)
    return out + [("Dataset", task.dataset) for task in spec.tasks if task.dataset]


def verdict_from_pods(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The results the workload left in a terminated container's message, if any."""
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses", []):
            message = (container.get("state", {}).get("terminated") or {}).get("message")
            if message:
                try:
                    document = json.loads(message)
                except json.JSONDecodeError:
                    continue
                if document.get("verdict") in ("Passed", "Failed"):
                    return document
    return None


def reconcile(evaluation: Evaluation, children: dict[str, list[dict[str, Any]]], refs: dict[tuple[str, str], Any],
              settings: OperatorSettings, now: datetime) -> Decision:
    previous, spec = evaluation.status or EvaluationStatus(), evaluation.spec
    generation = evaluation.metadata.generation
    if spec.baseline and spec.baseline.deployment:
        raise NotImplementedError("baseline.deployment is not built yet: name the baseline's pretrainJob, fineTune "
                                  "or uri")
    endpoint = spec.model.endpoint
    model = resolve_model(spec.model, refs)
    if not endpoint and not model.ready:
        what = " ".join(model_reference(spec.model) or ("model", ""))
        return waiting(previous, generation, now, what, model.message, failed=model.failed)
    baseline_uri = None
    if spec.baseline:
        baseline = resolve_model(spec.baseline, refs)
        if not baseline.ready:
            what = " ".join(model_reference(spec.baseline) or ("baseline", ""))
            return waiting(previous, generation, now, what, baseline.message, failed=baseline.failed)
        baseline_uri = baseline.artifact_uri
    tasks, inputs = [], [model.artifact_uri or "", baseline_uri or ""]
    for task in spec.tasks:
        data_uri = task.uri
        if task.dataset:
            data = dependency("Dataset", task.dataset, refs.get(("Dataset", task.dataset)))
            if not data.ready:
                return waiting(previous, generation, now, f"Dataset {task.dataset}", data.message, data.failed)
            data_uri = data.artifact_uri
        inputs.append(data_uri or "")
        settings_only = task.model_dump(exclude={"dataset", "uri"})
        tasks.append({**settings_only, "data_uri": local_path(data_uri) if data_uri else None})
    output = spec.output.uri or default_output(evaluation, settings)
    scored = ({"endpoint": endpoint_config(endpoint)} if endpoint
              else {"model_uri": local_path(model.artifact_uri or "")})
    config = EvalJobConfig.model_validate({
        **scored, "baseline_uri": local_path(baseline_uri) if baseline_uri else None, "tasks": tasks,
        "thresholds": [t.model_dump() for t in spec.thresholds], "seed": spec.seed, "batch_size": spec.batch_size,
        "output_uri": local_path(output), "name": evaluation.metadata.name})
    desired = single_pod_children(
        evaluation, "eval", ENTRYPOINT, config.to_wire(), pool=spec.node_pool, image=spec.image,
        backoff_limit=spec.backoff_limit, output=spec.output, pvc_uris=(output, *inputs), settings=settings)
    if endpoint and endpoint.api_key_secret:
        _add_secret_env(desired[-1], API_KEY_ENV, endpoint.api_key_secret.name, endpoint.api_key_secret.key)
    status, events = run_decision(previous, desired, children, generation=generation,
                                  artifact_uri=f"{output}/results.json", now=now)
    # What a Deployment's gate compares with the model it serves.
    status.model_uri = endpoint.url if endpoint else model.artifact_uri
    status.model_run = None if endpoint else model_run(spec.model, refs)
    job_name = desired[-1]["metadata"]["name"]
    _, pods = job_and_pods(children, job_name)
    if status.phase is Phase.SUCCEEDED:
        events += _apply_verdict(status, verdict_from_pods(pods), generation, now, previous.verdict)
    return Decision(children=desired, status=status.to_wire(), events=events)


def endpoint_config(endpoint: ModelEndpoint) -> dict[str, Any]:
    """The workload's `endpoint` config for a spec's endpoint: the key by the variable that carries it."""
    return {**endpoint.model_dump(exclude={"api_key_secret"}),
            "api_key_env": API_KEY_ENV if endpoint.api_key_secret else None}


def _add_secret_env(job: dict[str, Any], name: str, secret: str, key: str) -> None:
    """Give the Job's container the variable `name` from a Secret's key (the value never enters the spec)."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    container["env"] = [*container.get("env", []), {"name": name, "valueFrom": {"secretKeyRef": {
        "name": secret, "key": key}}}]


def _apply_verdict(status: EvaluationStatus, document: dict[str, Any] | None, generation: int | None,
                   now: datetime, previous: Verdict | None) -> list[Event]:
    if document is None:
        set_condition(status.conditions, "Passed", "Unknown", "NoResults",
                      "the evaluation finished without reporting results", now, generation)
        return []
    try:
        status.results = [MetricResult.model_validate(r) for r in document.get("results", [])]
    except ValidationError:
        status.results = []
    status.verdict = Verdict(document["verdict"])
    passed = status.verdict is Verdict.PASSED
    failing = [f"{r.task}/{r.metric.value} {'unmeasured' if r.value is None else format(r.value, '.4g')} "
               f"(needs {r.threshold})" for r in status.results if r.passed is False]
    message = "every threshold held" if passed else "failed: " + "; ".join(failing)
    set_condition(status.conditions, "Passed", passed, status.verdict.value, message, now, generation)
    if previous == status.verdict:
        return []
    return [Event("Normal" if passed else "Warning", f"Verdict{status.verdict.value}", message)]
