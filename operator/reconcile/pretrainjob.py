"""PretrainJob: wait for its Dataset, then run torchrun on `nodes` nodes (in a cluster, an Indexed Job + headless
Service).

Runs are numbered by spec generation and by the Dataset run they read (see `dependencies`): a Dataset that
re-runs rewrites the shards in place, so the PretrainJob waits for it and then trains again, as a new run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import PretrainJob
from llmops.operator.api.v1alpha1.common import RunInput
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.layout import model_uri
from llmops.trainer.config.training import PretrainRunConfig, steps_for_budget

from .defaults import output_root
from .dependencies import dependency
from .plan import LaunchPlan, RunObservation, Waiting
from .training import training_plan, with_training_result
from .workload import Event

ENTRYPOINT = "llmops-pretrain"
SUFFIX = "train"
DEFAULT_VOCAB_SIZE = 32000
"""What computeBudget sizing assumes when neither the spec nor the Dataset says the vocabulary size."""


def references(job: PretrainJob) -> list[tuple[str, str]]:
    return [("Dataset", job.spec.data.dataset)] if job.spec.data.dataset else []


def run_config(job: PretrainJob, data_uri: str, vocab_size: int | None,
               settings: OperatorSettings) -> PretrainRunConfig:
    """The workload's config; `vocab_size` is the Dataset's tokenizer's (status.stats.vocabSize), which sizes a
    computeBudget run when the spec leaves model.vocabSize unset."""
    spec = job.spec
    training = spec.training
    if spec.compute_budget is not None:
        vocab = spec.model.vocab_size or vocab_size or DEFAULT_VOCAB_SIZE
        world = spec.node_pool.nodes * max(1, spec.node_pool.gpus_per_node)
        tokens_per_step = (training.batch.micro_batch_size * training.batch.gradient_accumulation_steps
                           * spec.model.context_length * world)
        steps = steps_for_budget(spec.compute_budget, spec.model.parameter_count(vocab), tokens_per_step)
        training = training.model_copy(update={"max_steps": steps})
    return PretrainRunConfig(
        data_uri=data_uri, output_uri=output_root(job, settings), model=spec.model,
        training=training, checkpoint=spec.checkpoint,
        lineage={"pretrainJob": f"{job.metadata.namespace}/{job.metadata.name}",
                 **({"dataset": spec.data.dataset} if spec.data.dataset else {})})


def plan(job: PretrainJob, refs: dict[tuple[str, str], Any], settings: OperatorSettings) -> LaunchPlan | Waiting:
    """Wait for the data (a Dataset's current artifact, or the spec's uri), then torchrun on the node pool."""
    data_uri, vocab_size, inputs = job.spec.data.uri, None, tuple[RunInput, ...]()
    if name := job.spec.data.dataset:
        body = refs.get(("Dataset", name))
        needed = dependency("Dataset", name, body)
        if not needed.ready:
            return Waiting(f"Dataset {name}", needed.message, failed=needed.failed)
        data_uri, inputs = needed.artifact_uri, (needed.input,) if needed.input else ()
        vocab_size = (((body or {}).get("status") or {}).get("stats") or {}).get("vocabSize")
    assert data_uri is not None
    spec, out = job.spec, output_root(job, settings)
    return training_plan(
        job, SUFFIX, ENTRYPOINT, run_config(job, data_uri, vocab_size, settings).to_wire(), pool=spec.node_pool,
        image=spec.image, backoff_limit=spec.backoff_limit, output=spec.output, reads={"data": data_uri},
        writes=out, artifact_uri=model_uri(out), settings=settings, distributed=True,
        active_deadline_seconds=spec.active_deadline_seconds, inputs=inputs)


def complete(job: PretrainJob, status: TrainingStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    status.data_uri = plan.reads["data"]
    with_training_result(status, observation, plan.writes)
    return []
