"""Evaluation: wait for the model (and baseline, judge and task datasets), run one scoring process, read the
verdict.

A model given as an endpoint is not waited for: the workload scores it over HTTP, with the API key (if any)
from its Secret in the environment, never in the config.

The workload reports its verdict and results on the result channel (`trainer/config/result.py`: a pod's
termination message in a cluster), so the operator learns them with no access to the artifact store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import Evaluation
from llmops.operator.api.v1alpha1.common import ModelRef, Phase
from llmops.operator.api.v1alpha1.evaluation import EvaluationStatus, ModelEndpoint, Verdict
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.evaluate import EvalJobConfig
from llmops.trainer.config.layout import results_uri
from llmops.trainer.config.result import WorkloadResult

from .conditions import set_condition
from .defaults import output_root
from .dependencies import Dependency, dependency
from .plan import LaunchPlan, RunObservation, SecretEnv, Waiting
from .training import model_reference, model_run, resolve_model, training_plan
from .workload import Event

ENTRYPOINT = "llmops-evaluate"
SUFFIX = "eval"
API_KEY_ENV = "LLMOPS_ENDPOINT_API_KEY"
"""The container variable the endpoint's API key reaches the workload in (from spec.model.endpoint's Secret)."""


def references(evaluation: Evaluation) -> list[tuple[str, str]]:
    spec = evaluation.spec
    out = [target] if (target := model_reference(spec.model)) else []
    if spec.baseline and (target := model_reference(spec.baseline)):
        out.append(target)
    if spec.judge and (target := model_reference(spec.judge)):
        out.append(target)
    return out + [("Dataset", task.dataset) for task in spec.tasks if task.dataset]


def plan(evaluation: Evaluation, refs: dict[tuple[str, str], Any], settings: OperatorSettings
         ) -> LaunchPlan | Waiting:
    spec = evaluation.spec
    if spec.baseline and spec.baseline.deployment:
        raise NotImplementedError("baseline.deployment is not built yet: name the baseline's pretrainJob, fineTune "
                                  "or uri")
    endpoint = spec.model.endpoint
    model = resolve_model(spec.model, refs)
    if not endpoint and not model.ready:
        what = " ".join(model_reference(spec.model) or ("model", ""))
        return Waiting(what, model.message, model.failed)
    inputs = [None if endpoint else model.input]
    compared: dict[str, str | None] = {}
    for role, ref in (("baseline", spec.baseline), ("judge", spec.judge)):
        found = _ready_model(ref, role, refs) if ref else None
        if isinstance(found, Waiting):
            return found
        compared[role] = found.artifact_uri if found else None
        inputs.append(found.input if found else None)
    baseline_uri, judge_uri = compared["baseline"], compared["judge"]
    tasks, reads = [], {"model": model.artifact_uri or "", "baseline": baseline_uri or "", "judge": judge_uri or ""}
    for task in spec.tasks:
        data_uri = task.uri
        if task.dataset:
            data = dependency("Dataset", task.dataset, refs.get(("Dataset", task.dataset)))
            if not data.ready:
                return Waiting(f"Dataset {task.dataset}", data.message, data.failed)
            data_uri = data.artifact_uri
            inputs.append(data.input)
        reads[f"task:{task.name}"] = data_uri or ""
        settings_only = task.model_dump(exclude={"dataset", "uri"})
        tasks.append({**settings_only, "data_uri": data_uri})
    output = output_root(evaluation, settings)
    scored = {"endpoint": endpoint_config(endpoint)} if endpoint else {"model_uri": model.artifact_uri or ""}
    config = EvalJobConfig.model_validate({
        **scored, "baseline_uri": baseline_uri, "judge_uri": judge_uri, "tasks": tasks,
        "thresholds": [t.model_dump() for t in spec.thresholds], "seed": spec.seed, "batch_size": spec.batch_size,
        "output_uri": output, "name": evaluation.metadata.name})
    secret = endpoint.api_key_secret if endpoint else None
    return training_plan(
        evaluation, SUFFIX, ENTRYPOINT, config.to_wire(), pool=spec.node_pool, image=spec.image,
        backoff_limit=spec.backoff_limit, output=spec.output, reads=reads, writes=output,
        artifact_uri=results_uri(output), settings=settings, distributed=False,
        secret_env=(SecretEnv(API_KEY_ENV, secret.name, secret.key),) if secret else (),
        inputs=tuple(i for i in inputs if i is not None))


def _ready_model(ref: ModelRef, role: str, refs: dict[tuple[str, str], Any]) -> Dependency | Waiting:
    """The model a reference names once it is ready, else what the Evaluation waits for (`role` names a model
    given by uri, which is always ready)."""
    found = resolve_model(ref, refs)
    if found.ready:
        return found
    return Waiting(" ".join(model_reference(ref) or (role, "")), found.message, found.failed)


def complete(evaluation: Evaluation, status: EvaluationStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    """What a Deployment's gate compares with the model it serves, and the verdict the workload reported."""
    endpoint = evaluation.spec.model.endpoint
    status.model_uri = endpoint.url if endpoint else plan.reads.get("model")
    status.model_run = None if endpoint else model_run(evaluation.spec.model, refs)
    if status.phase is not Phase.SUCCEEDED:
        return []
    status.results_uri = plan.artifact_uri
    previous = evaluation.status.verdict if evaluation.status else None
    result = observation.result if observation.result and observation.result.verdict else None
    return _apply_verdict(status, result, evaluation.metadata.generation, now, previous)


def endpoint_config(endpoint: ModelEndpoint) -> dict[str, Any]:
    """The workload's `endpoint` config for a spec's endpoint: the key by the variable that carries it."""
    return {**endpoint.model_dump(exclude={"api_key_secret"}),
            "api_key_env": API_KEY_ENV if endpoint.api_key_secret else None}


def _apply_verdict(status: EvaluationStatus, result: WorkloadResult | None, generation: int | None,
                   now: datetime, previous: Verdict | None) -> list[Event]:
    if result is None:
        set_condition(status.conditions, "Passed", "Unknown", "NoResults",
                      "the evaluation finished without reporting results", now, generation)
        return []
    status.results = [r.model_copy() for r in result.results]
    status.verdict = Verdict(result.verdict)
    passed = status.verdict is Verdict.PASSED
    failing = [f"{r.task}/{r.metric.value} {'unmeasured' if r.value is None else format(r.value, '.4g')} "
               f"(needs {r.threshold})" for r in status.results if r.passed is False]
    message = "every threshold held" if passed else "failed: " + "; ".join(failing)
    set_condition(status.conditions, "Passed", passed, status.verdict.value, message, now, generation)
    if previous == status.verdict:
        return []
    return [Event("Normal" if passed else "Warning", f"Verdict{status.verdict.value}", message)]
