"""PretrainJob: wait for its Dataset, then run torchrun on `nodes` nodes (in a cluster, an Indexed Job + headless
Service).

Runs are named by spec generation, like the Dataset's; the data location is resolved once, when the
run starts, and kept in status, so a Dataset re-running later does not pull the rug from under a run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import PretrainJob
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.training import PretrainRunConfig, steps_for_budget

from .dependencies import dependency
from .plan import LaunchPlan, RunObservation, Waiting
from .training import training_plan, with_final_metrics
from .workload import Event

ENTRYPOINT = "llmops-pretrain"


def references(job: PretrainJob) -> list[tuple[str, str]]:
    return [("Dataset", job.spec.data.dataset)] if job.spec.data.dataset else []


def output_uri(job: PretrainJob, settings: OperatorSettings) -> str:
    return job.spec.output.uri or f"{settings.artifact_root}/{job.metadata.namespace}/pretrainjobs/" \
        f"{job.metadata.name}"


def run_config(job: PretrainJob, data_uri: str, vocab_size: int | None,
               settings: OperatorSettings) -> PretrainRunConfig:
    spec = job.spec
    training = spec.training
    if spec.compute_budget is not None:
        vocab = spec.model.vocab_size or vocab_size or 32000
        world = spec.node_pool.nodes * max(1, spec.node_pool.gpus_per_node)
        tokens_per_step = (training.batch.micro_batch_size * training.batch.gradient_accumulation_steps
                           * spec.model.context_length * world)
        steps = steps_for_budget(spec.compute_budget, spec.model.parameter_count(vocab), tokens_per_step)
        training = training.model_copy(update={"max_steps": steps})
    return PretrainRunConfig(
        data_uri=data_uri, output_uri=output_uri(job, settings), model=spec.model,
        training=training, checkpoint=spec.checkpoint,
        lineage={"pretrainJob": f"{job.metadata.namespace}/{job.metadata.name}",
                 **({"dataset": spec.data.dataset} if spec.data.dataset else {})})


def plan(job: PretrainJob, refs: dict[tuple[str, str], Any], settings: OperatorSettings) -> LaunchPlan | Waiting:
    """Wait for the data, then torchrun on the node pool. The data location is kept from the run's start."""
    previous = job.status or TrainingStatus()
    data_uri = previous.data_uri if previous.observed_generation == job.metadata.generation else None
    vocab_size = None
    if data_uri is None and job.spec.data.uri:
        data_uri = job.spec.data.uri
    elif data_uri is None and job.spec.data.dataset:
        name = job.spec.data.dataset
        body = refs.get(("Dataset", name))
        needed = dependency("Dataset", name, body)
        if not needed.ready:
            return Waiting(f"Dataset {name}", needed.message, failed=needed.failed)
        data_uri = needed.artifact_uri
        vocab_size = ((body or {}).get("status") or {}).get("stats", {}).get("vocabSize")
    assert data_uri is not None
    spec, out = job.spec, output_uri(job, settings)
    return training_plan(
        job, "train", ENTRYPOINT, run_config(job, data_uri, vocab_size, settings).to_wire(), pool=spec.node_pool,
        image=spec.image, backoff_limit=spec.backoff_limit, output=spec.output, reads={"data": data_uri},
        writes=out, artifact_uri=f"{out}/model", settings=settings, distributed=True,
        active_deadline_seconds=spec.active_deadline_seconds)


def complete(job: PretrainJob, status: TrainingStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    status.data_uri = plan.reads["data"]
    with_final_metrics(status, observation)
    return []
