"""A downstream resource follows what it references (operator/reconcile/dependencies.py).

When a referenced PretrainJob, FineTune or Dataset produces a new artifact, the resource that consumed the old one
starts a new, distinct run (a Job name never used before), records which artifact each run consumed in
status.inputs, and until that run finishes shows neither the old artifact nor the old verdict as current.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from llmops.operator.api.admission import parse
from llmops.operator.api.v1alpha1.common import Phase, RunInput
from llmops.operator.api.v1alpha1.evaluation import EvaluationStatus
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import evaluation, finetune, pretrainjob
from llmops.operator.reconcile.plan import LaunchPlan
from llmops.operator.reconcile.serving import gate
from llmops.operator.reconcile.workload import run_number
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config import layout
from llmops.trainer.config.result import WorkloadResult
from tests.conftest import example, patched

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(artifact_root="s3://b", trainer_image="trainer:1")

PRETRAIN = ("PretrainJob", "tiny-shakespeare")
FINETUNE = ("FineTune", "tiny-shakespeare-lora")
DATASET = ("Dataset", "shakespeare")


def make(kind: str, generation: int = 1) -> Any:
    return parse(patched(example(kind), {"metadata": {"namespace": "team", "uid": f"uid-{kind}",
                                                      "generation": generation}}))


def upstream(key: tuple[str, str], generation: int, run: str | None, uri: str, *, observed: int | None = None,
             phase: str = "Succeeded") -> dict[str, Any]:
    """A referenced resource as the API server shows it: `observed` < `generation` right after a spec edit."""
    status = {"phase": phase, "observedGeneration": observed or generation, "jobName": run}
    if phase == "Succeeded":
        status["artifactUri"] = uri
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": key[0],
            "metadata": {"name": key[1], "namespace": "team", "generation": generation}, "status": status}


def finished(decision: Any, result: WorkloadResult) -> dict[str, list[dict[str, Any]]]:
    """The decision's run as it is once its pod succeeded and reported `result` on the result channel."""
    name = decision.children[-1]["metadata"]["name"]
    job = {"metadata": {"name": name}, "spec": {}, "status": {"succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}}
    pod = {"metadata": {"name": f"{name}-0-x", "labels": {"job-name": name}}, "status": {"containerStatuses": [
        {"name": "main", "state": {"terminated": {"exitCode": 0, "message": result.to_message()}}}]}}
    return {"Job": [job], "Pod": [pod]}


def job_names(decision: Any) -> list[str]:
    return [c["metadata"]["name"] for c in decision.children if c["kind"] == "Job"]


class TestAFineTuneFollowsItsPretrainJob:
    def test_a_new_pretrain_artifact_starts_a_new_distinct_run(self) -> None:
        ft = make("FineTune")
        first_base = {PRETRAIN: upstream(PRETRAIN, 1, "tiny-shakespeare-train-1", "s3://b/ptj/model")}
        started = reconcile(finetune, ft, {}, first_base, SETTINGS, NOW)
        assert job_names(started) == ["tiny-shakespeare-lora-finetune-1"]
        assert started.status["inputs"] == [{"kind": "PretrainJob", "name": "tiny-shakespeare", "generation": 1,
                                             "run": "tiny-shakespeare-train-1", "artifactUri": "s3://b/ptj/model"}]
        ft.status = TrainingStatus.model_validate(started.status)
        run_1 = finished(started, WorkloadResult(artifact_uri="s3://b/ft/model", metrics={"loss": 1.5}))
        done = reconcile(finetune, ft, run_1, first_base, SETTINGS, NOW)
        assert done.status["phase"] == "Succeeded" and done.status["artifactUri"].endswith("/model")
        ft.status = TrainingStatus.model_validate(done.status)

        # The PretrainJob's spec is edited: its Succeeded status is of the old generation, its artifact about
        # to be overwritten in place. The FineTune waits, and shows nothing of its old run as current.
        edited = {PRETRAIN: upstream(PRETRAIN, 2, "tiny-shakespeare-train-1", "s3://b/ptj/model", observed=1)}
        waits = reconcile(finetune, ft, run_1, edited, SETTINGS, NOW)
        assert waits.status["phase"] == "Waiting" and waits.children == []  # the old Job is pruned
        assert "generation 2" in next(c for c in waits.status["conditions"] if c["type"] == "Ready")["message"]
        for gone in ("artifactUri", "metrics", "jobName", "inputs", "completionTime"):
            assert not waits.status.get(gone), gone
        ft.status = TrainingStatus.model_validate(waits.status)

        second_base = {PRETRAIN: upstream(PRETRAIN, 2, "tiny-shakespeare-train-2", "s3://b/ptj/model")}
        rerun = reconcile(finetune, ft, run_1, second_base, SETTINGS, NOW)
        assert job_names(rerun) == ["tiny-shakespeare-lora-finetune-2"]  # generation 1, its second run
        assert rerun.status["phase"] == "Pending" and "artifactUri" not in rerun.status
        assert rerun.status["runNumber"] == 2 and rerun.status["inputs"][0]["run"] == "tiny-shakespeare-train-2"
        ft.status = TrainingStatus.model_validate(rerun.status)
        again = reconcile(finetune, ft, {}, second_base, SETTINGS, NOW)
        assert job_names(again) == job_names(rerun)  # level-based: the same inputs are the same run

    def test_a_pretrain_job_in_progress_stops_when_its_dataset_reruns_then_trains_on_the_new_data(self) -> None:
        job = make("PretrainJob")
        data_1 = {DATASET: upstream(DATASET, 1, "shakespeare-data-1", "s3://b/d")}
        started = reconcile(pretrainjob, job, {}, data_1, SETTINGS, NOW)
        job.status = TrainingStatus.model_validate(started.status)
        rerunning = {DATASET: upstream(DATASET, 2, "shakespeare-data-2", "s3://b/d", phase="Running")}
        stopped = reconcile(pretrainjob, job, {}, rerunning, SETTINGS, NOW)
        assert stopped.children == [] and stopped.status["waitingFor"] == "Dataset shakespeare"
        job.status = TrainingStatus.model_validate(stopped.status)
        data_2 = {DATASET: upstream(DATASET, 2, "shakespeare-data-2", "s3://b/d")}
        assert job_names(reconcile(pretrainjob, job, {}, data_2, SETTINGS, NOW)) == ["tiny-shakespeare-train-2"]


class TestAnEvaluationBeingReplacedNeverReadsAsPassed:
    def refs(self, ft_run: str, ft_generation: int = 1, observed: int | None = None) -> dict[Any, Any]:
        return {FINETUNE: upstream(FINETUNE, ft_generation, ft_run, "s3://b/ft/model", observed=observed),
                PRETRAIN: upstream(PRETRAIN, 1, "tiny-shakespeare-train-1", "s3://b/ptj/model"),
                DATASET: upstream(DATASET, 1, "shakespeare-data-1", "s3://b/d")}

    def gate_of(self, ev: Any, status: dict[str, Any], refs: dict[Any, Any]) -> gate.GateResult:
        body = {"metadata": {"name": ev.metadata.name}, "status": status}
        return gate.check(ev.metadata.name, body, "s3://b/ft/model", f"FineTune/{FINETUNE[1]}@"
                          f"{refs[FINETUNE]['status']['jobName']}")

    def test_the_old_verdict_goes_while_the_model_is_retrained_and_scored_again(self) -> None:
        ev = make("Evaluation")
        refs_1 = self.refs("tiny-shakespeare-lora-finetune-1")
        started = reconcile(evaluation, ev, {}, refs_1, SETTINGS, NOW)
        assert [(i["kind"], i["run"]) for i in started.status["inputs"]] == [
            ("FineTune", "tiny-shakespeare-lora-finetune-1"), ("PretrainJob", "tiny-shakespeare-train-1"),
            ("Dataset", "shakespeare-data-1")]
        ev.status = EvaluationStatus.model_validate(started.status)
        passed = WorkloadResult(verdict="Passed", results=[])
        scored = reconcile(evaluation, ev, finished(started, passed), refs_1, SETTINGS, NOW)
        assert scored.status["verdict"] == "Passed" and self.gate_of(ev, scored.status, refs_1).passed
        ev.status = EvaluationStatus.model_validate(scored.status)

        retraining = self.refs("tiny-shakespeare-lora-finetune-1", ft_generation=2, observed=1)
        waits = reconcile(evaluation, ev, finished(started, passed), retraining, SETTINGS, NOW)
        assert waits.status["phase"] == "Waiting" and "verdict" not in waits.status
        assert not waits.status.get("results") and "artifactUri" not in waits.status
        passed_condition = next(c for c in waits.status["conditions"] if c["type"] == "Passed")
        assert passed_condition["status"] == "Unknown"
        assert not self.gate_of(ev, waits.status, retraining).passed
        ev.status = EvaluationStatus.model_validate(waits.status)

        refs_2 = self.refs("tiny-shakespeare-lora-finetune-2", ft_generation=2)
        rescoring = reconcile(evaluation, ev, {}, refs_2, SETTINGS, NOW)
        assert job_names(rescoring) == ["tiny-shakespeare-lora-eval-2"] and "verdict" not in rescoring.status
        assert not self.gate_of(ev, rescoring.status, refs_2).passed
        ev.status = EvaluationStatus.model_validate(rescoring.status)
        failed = WorkloadResult(verdict="Failed", results=[])
        rescored = reconcile(evaluation, ev, finished(rescoring, failed), refs_2, SETTINGS, NOW)
        assert rescored.status["verdict"] == "Failed" and rescored.status["modelRun"].endswith("finetune-2")
        assert self.gate_of(ev, rescored.status, refs_2).failed


def plan_with(inputs: list[RunInput], generation: int = 1) -> LaunchPlan:
    ft = make("FineTune", generation)
    base = upstream(PRETRAIN, 1, inputs[0].run if inputs else None, "s3://b/ptj/model")
    planned = finetune.plan(ft, {PRETRAIN: base}, SETTINGS)
    assert isinstance(planned, LaunchPlan)
    return planned


RUN_1 = RunInput(kind="PretrainJob", name="tiny-shakespeare", generation=1, run="tiny-shakespeare-train-1",
                 artifact_uri="s3://b/ptj/model")
RUN_2 = RUN_1.model_copy(update={"run": "tiny-shakespeare-train-2"})


@pytest.mark.parametrize(("previous", "generation", "consumes", "want"), [
    (TrainingStatus(), 1, RUN_1, 1),
    (TrainingStatus(), 3, RUN_1, 3),  # a first run is numbered as its generation
    (TrainingStatus(job_name="tiny-shakespeare-lora-finetune-1", observed_generation=1, run_number=1,
                    inputs=[RUN_1]), 1, RUN_1, 1),
    (TrainingStatus(job_name="tiny-shakespeare-lora-finetune-1", observed_generation=1, run_number=1,
                    inputs=[RUN_1]), 1, RUN_2, 2),
    (TrainingStatus(job_name="tiny-shakespeare-lora-finetune-4", observed_generation=1, run_number=4,
                    inputs=[RUN_1]), 2, RUN_1, 5),
    (TrainingStatus(job_name="tiny-shakespeare-lora-finetune-2", observed_generation=1, run_number=2,
                    inputs=[RUN_1]), 5, RUN_1, 5),
    (TrainingStatus(phase=Phase.WAITING, observed_generation=1, run_number=2), 1, RUN_2, 3),  # waited: ended
    (TrainingStatus(job_name="tiny-shakespeare-lora-finetune-2", observed_generation=2), 2, RUN_1, 2),  # legacy
], ids=["first", "first-of-generation-3", "same-inputs", "new-input", "new-generation", "never-below-generation",
        "after-waiting", "status-from-before-numbering"])
def test_run_numbers(previous: TrainingStatus, generation: int, consumes: RunInput, want: int) -> None:
    planned = plan_with([consumes], generation)
    assert planned.inputs == (consumes,)
    assert run_number(previous, generation, planned) == want


def test_the_config_of_a_new_run_reads_the_new_artifact() -> None:
    ft = make("FineTune")
    planned = finetune.plan(ft, {PRETRAIN: upstream(PRETRAIN, 2, "tiny-shakespeare-train-2", "s3://b/v2/model")},
                            SETTINGS)
    assert isinstance(planned, LaunchPlan) and planned.config["baseUri"] == "s3://b/v2/model"
    assert json.loads(json.dumps(planned.config))["lineage"]["base"] == "s3://b/v2/model"


def test_each_run_is_named_in_its_workloads_environment_so_it_resumes_only_from_its_own_checkpoints() -> None:
    ft = make("FineTune")
    refs = {PRETRAIN: upstream(PRETRAIN, 1, "tiny-shakespeare-train-2", "s3://b/ptj/model")}
    ft.status = TrainingStatus(job_name="tiny-shakespeare-lora-finetune-1", observed_generation=1, run_number=1,
                               inputs=[RUN_1])
    decision = reconcile(finetune, ft, {}, refs, SETTINGS, NOW)
    (job,) = [c for c in decision.children if c["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert job["metadata"]["name"] == "tiny-shakespeare-lora-finetune-2"
    assert env[layout.RUN_ENV] == "tiny-shakespeare-lora-finetune-2"
