"""What a finished workload reports on the result channel (trainer/config/result.py) reaches its status.

A Dataset's counts and tokenizer (printer columns Documents and Tokens; a PretrainJob's computeBudget sizing reads
the vocabulary size), a training run's trainable parameters and newest checkpoint. The workload names locations
as it sees them (a pvc:// claim is a mount path in a pod); status keeps the resource's own URIs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from llmops.operator.api.admission import parse
from llmops.operator.api.v1alpha1.dataset import DatasetStatus
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import dataset, finetune, pretrainjob
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.manifest import DatasetStats
from llmops.trainer.config.result import CheckpointStatus, WorkloadResult
from tests.conftest import DELETE, example, patched

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(artifact_root="pvc://artifacts", trainer_image="trainer:1")
STATS = DatasetStats(documents_read=1500, documents_kept=1200, tokens=345678, train_tokens=300000,
                     validation_tokens=45678, vocab_size=2048, dropped={"quality.minWords": 300})


def make(kind: str, **spec: Any) -> Any:
    return parse(patched(example(kind), {"metadata": {"namespace": "team", "uid": f"u-{kind}", "generation": 1},
                                         "spec": spec}))


def finished(job_name: str, result: WorkloadResult) -> dict[str, list[dict[str, Any]]]:
    job = {"metadata": {"name": job_name}, "spec": {}, "status": {"succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}}
    pod = {"metadata": {"name": f"{job_name}-0-x", "labels": {"job-name": job_name}}, "status": {"containerStatuses": [
        {"name": "main", "state": {"terminated": {"exitCode": 0, "message": result.to_message()}}}]}}
    return {"Job": [job], "Pod": [pod]}


def finished_dataset() -> dict[str, Any]:
    """The example Dataset, its run finished with the result the data workload writes in a pod."""
    ds = make("Dataset")
    pod_view = "/mnt/pvc/artifacts/team/datasets/shakespeare"
    result = WorkloadResult(artifact_uri=pod_view, stats=STATS, tokenizer_uri=f"{pod_view}/tokenizer.json")
    decision = reconcile(dataset, ds, finished("shakespeare-data-1", result), {}, SETTINGS, NOW)
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "Dataset",
            "metadata": {"name": "shakespeare", "namespace": "team", "generation": 1}, "status": decision.status}


def test_a_finished_dataset_shows_its_counts_and_tokenizer() -> None:
    status = DatasetStatus.model_validate(finished_dataset()["status"])
    assert status.phase == "Succeeded" and status.stats == STATS
    assert status.tokenizer_uri == "pvc://artifacts/team/datasets/shakespeare/tokenizer.json"
    assert status.artifact_uri == "pvc://artifacts/team/datasets/shakespeare"


def test_a_running_dataset_shows_no_counts_yet() -> None:
    running = {"Job": [{"metadata": {"name": "shakespeare-data-1"}, "spec": {}, "status": {"active": 1, "ready": 1}}]}
    decision = reconcile(dataset, make("Dataset"), running, {}, SETTINGS, NOW)
    assert decision.status["phase"] == "Running" and "stats" not in decision.status


def test_a_compute_budget_is_sized_by_the_vocabulary_the_dataset_wrote() -> None:
    job = make("PretrainJob", training={"maxSteps": DELETE}, computeBudget={"flops": 1e15})
    assert job.spec.model.vocab_size is None  # the spec leaves it to the Dataset's tokenizer
    decision = reconcile(pretrainjob, job, {}, {("Dataset", "shakespeare"): finished_dataset()}, SETTINGS, NOW)
    config = json.loads(decision.children[0]["data"]["config.json"])
    tokens_per_step = job.spec.training.batch.micro_batch_size * job.spec.model.context_length
    want = int(1e15 / (6 * job.spec.model.parameter_count(2048) * tokens_per_step))
    assert config["training"]["maxSteps"] == want
    assert want != int(1e15 / (6 * job.spec.model.parameter_count(pretrainjob.DEFAULT_VOCAB_SIZE) * tokens_per_step))


def test_a_finished_training_run_shows_its_parameters_and_newest_checkpoint() -> None:
    ft = make("FineTune")
    base = {("PretrainJob", "tiny-shakespeare"): {
        "metadata": {"generation": 1}, "status": {"phase": "Succeeded", "observedGeneration": 1,
                                                  "jobName": "tiny-shakespeare-train-1",
                                                  "artifactUri": "pvc://artifacts/team/pretrainjobs/x/model"}}}
    pod_view = "/mnt/pvc/artifacts/team/finetunes/tiny-shakespeare-lora"
    result = WorkloadResult(artifact_uri=f"{pod_view}/model", metrics={"loss": 1.25}, parameters=16384,
                            checkpoint=CheckpointStatus(step=60, uri=f"{pod_view}/checkpoints/step-00000060"))
    decision = reconcile(finetune, ft, finished("tiny-shakespeare-lora-finetune-1", result), base, SETTINGS, NOW)
    status = TrainingStatus.model_validate(decision.status)
    assert status.phase == "Succeeded" and status.parameters == 16384 and status.metrics.loss == 1.25
    assert status.checkpoint == CheckpointStatus(
        step=60, uri="pvc://artifacts/team/finetunes/tiny-shakespeare-lora/checkpoints/step-00000060")
    assert status.artifact_uri == "pvc://artifacts/team/finetunes/tiny-shakespeare-lora/model"
