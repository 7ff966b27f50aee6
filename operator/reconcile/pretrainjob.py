"""PretrainJob: wait for its Dataset (and the model it continues from, with `init`), then run torchrun on `nodes`
nodes (in a cluster, an Indexed Job + headless Service).

Runs are numbered by spec generation and by the Dataset run they read (see `dependencies`): a Dataset that
re-runs rewrites the shards in place, so the PretrainJob waits for it and then trains again, as a new run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import PretrainJob
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.layout import model_uri
from llmops.trainer.config.model import ModelConfig
from llmops.trainer.config.sizing import BudgetSizing, size_run
from llmops.trainer.config.training import ModelInit, PretrainRunConfig

from .defaults import output_root
from .dependencies import dependency
from .plan import LaunchPlan, RunObservation, Waiting
from .training import model_reference, resolve_model, training_plan, with_training_result
from .workload import Event

ENTRYPOINT = "llmops-pretrain"
SUFFIX = "train"
DEFAULT_VOCAB_SIZE = 32000
"""What computeBudget sizing assumes when neither the spec nor the Dataset says the vocabulary size."""


def references(job: PretrainJob) -> list[tuple[str, str]]:
    out = [("Dataset", job.spec.data.dataset)] if job.spec.data.dataset else []
    return out + ([target] if job.spec.init and (target := model_reference(job.spec.init)) else [])


def dataset_stats(job: PretrainJob, refs: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """The referenced Dataset's status.stats (vocabSize, trainTokens), empty while unknown."""
    body = refs.get(("Dataset", job.spec.data.dataset)) if job.spec.data.dataset else None
    return ((body or {}).get("status") or {}).get("stats") or {}


def sizing(job: PretrainJob, stats: dict[str, Any]) -> tuple[ModelConfig, BudgetSizing | None]:
    """The shape to train and, with a computeBudget, what the budget buys (stats: the Dataset's, for the
    vocabulary and the training tokens)."""
    spec = job.spec
    model = spec.model or ModelConfig()
    if spec.compute_budget is None:
        return model, None
    vocab = model.vocab_size or stats.get("vocabSize") or DEFAULT_VOCAB_SIZE
    world = spec.node_pool.nodes * max(1, spec.node_pool.gpus_per_node)
    batch = spec.training.batch
    tokens_per_step = batch.micro_batch_size * batch.gradient_accumulation_steps * model.context_length * world
    return size_run(spec.compute_budget, model, vocab, tokens_per_step, stats.get("trainTokens") or None)


def run_config(job: PretrainJob, data_uri: str, stats: dict[str, Any], settings: OperatorSettings,
               init_uri: str | None = None) -> PretrainRunConfig:
    """The workload's config: the shape (chosen from the budget with computeBudget.chooseShape), the steps a budget
    buys, and with init the model to continue from."""
    spec = job.spec
    model, sized = sizing(job, stats)
    training = spec.training.model_copy(update={"max_steps": sized.steps}) if sized else spec.training
    init = ModelInit(uri=init_uri, **spec.init.model_dump(include=set(ModelInit.model_fields) - {"uri"})) \
        if spec.init and init_uri else None
    return PretrainRunConfig(
        data_uri=data_uri, output_uri=output_root(job, settings), model=model, init=init,
        training=training, checkpoint=spec.checkpoint,
        lineage={"pretrainJob": f"{job.metadata.namespace}/{job.metadata.name}",
                 **({"dataset": spec.data.dataset} if spec.data.dataset else {}),
                 **({"parent": "/".join(target)} if spec.init and (target := model_reference(spec.init)) else {})})


def plan(job: PretrainJob, refs: dict[tuple[str, str], Any], settings: OperatorSettings) -> LaunchPlan | Waiting:
    """Wait for the data (a Dataset's current artifact, or the spec's uri) and the init model, then torchrun on
    the node pool."""
    data_uri, inputs, init_uri = job.spec.data.uri, [], None
    if name := job.spec.data.dataset:
        needed = dependency("Dataset", name, refs.get(("Dataset", name)))
        if not needed.ready:
            return Waiting(f"Dataset {name}", needed.message, failed=needed.failed)
        data_uri, inputs = needed.artifact_uri, [needed.input]
    if job.spec.init:
        parent = resolve_model(job.spec.init, refs)
        if not parent.ready:
            return Waiting(" ".join(model_reference(job.spec.init) or ("model", "")), parent.message, parent.failed)
        init_uri, inputs = parent.artifact_uri, [*inputs, parent.input]
    assert data_uri is not None
    spec, out = job.spec, output_root(job, settings)
    config = run_config(job, data_uri, dataset_stats(job, refs), settings, init_uri)
    return training_plan(
        job, SUFFIX, ENTRYPOINT, config.to_wire(), pool=spec.node_pool,
        image=spec.image, backoff_limit=spec.backoff_limit, output=spec.output,
        reads={"data": data_uri, "init": init_uri or ""}, writes=out, artifact_uri=model_uri(out), settings=settings,
        distributed=True, active_deadline_seconds=spec.active_deadline_seconds,
        inputs=tuple(i for i in inputs if i is not None))


def complete(job: PretrainJob, status: TrainingStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    status.data_uri = plan.reads["data"]
    status.init_uri = plan.reads.get("init")
    _, sized = sizing(job, dataset_stats(job, refs))
    events = []
    if sized and sized.epochs and sized.epochs > 1 and (status.sizing is None or status.sizing.epochs != sized.epochs):
        events.append(Event("Warning", "RepeatedData",
                            f"the budget pays for {sized.tokens} training tokens but the Dataset has "
                            f"{round(sized.tokens / sized.epochs)}: the data is seen {sized.epochs} times; add data "
                            "or lower computeBudget.flops (compute-optimal runs see each token about once)"))
    status.sizing = sized
    with_training_result(status, observation, plan.writes)
    return events
