"""Shared by the training and evaluation kinds: model references, output locations, and their launch plan:
one process running the workload, or torchrun over a node pool (PretrainJob always, FineTune when distributed)."""

from __future__ import annotations

from typing import Any

from llmops.operator.api.v1alpha1.common import ImageSpec, ModelRef, NodePool, Output, Phase, Resource
from llmops.operator.api.v1alpha1.pretrainjob import TrainingMetrics, TrainingStatus
from llmops.operator.settings import OperatorSettings

from .dependencies import Dependency, dependency
from .plan import Compute, Launcher, LaunchPlan, RunObservation, SecretEnv, plan_app


def model_reference(ref: ModelRef) -> tuple[str, str] | None:
    if ref.pretrain_job:
        return ("PretrainJob", ref.pretrain_job)
    if ref.fine_tune:
        return ("FineTune", ref.fine_tune)
    return None


def model_run(ref: ModelRef, refs: dict[tuple[str, str], Any]) -> str | None:
    """Which run of a referenced PretrainJob or FineTune made its current artifact (`FineTune/x@<job>`): outputs
    keep their URI from run to run, so the URI alone cannot tell a retrained model from the one evaluated."""
    target = model_reference(ref)
    body = refs.get(target) if target else None
    job = ((body or {}).get("status") or {}).get("jobName")
    return f"{target[0]}/{target[1]}@{job}" if target and job else None


def resolve_model(ref: ModelRef, refs: dict[tuple[str, str], Any]) -> Dependency:
    """The model directory a reference points at, once the training that makes it has succeeded."""
    target = model_reference(ref)
    if target is None:
        return Dependency(True, False, "model given by uri", ref.uri)
    return dependency(*target, refs.get(target))


def default_output(resource: Resource, settings: OperatorSettings) -> str:
    meta = resource.metadata
    return f"{settings.artifact_root}/{meta.namespace}/{resource.names.plural}/{meta.name}"


def workload_image(image: ImageSpec, gpus: int, settings: OperatorSettings) -> str:
    """The spec's image, else the operator's default (the CUDA variant when GPUs are asked for)."""
    return image.image or (settings.trainer_cuda_image if gpus else settings.trainer_image)


def is_distributed(pool: NodePool) -> bool:
    """More than one training process: several pods, or several GPUs (one process each) in one pod."""
    return pool.nodes > 1 or pool.gpus_per_node > 1


def training_plan(resource: Resource, suffix: str, entrypoint: str, config: dict[str, Any], *, pool: NodePool,
                  image: ImageSpec, backoff_limit: int, output: Output, reads: dict[str, str], writes: str,
                  artifact_uri: str, settings: OperatorSettings, distributed: bool,
                  active_deadline_seconds: int | None = None, secret_env: tuple[SecretEnv, ...] = ()) -> LaunchPlan:
    """The plan of a run `<name>-<suffix>-<generation>` of `entrypoint --config FILE`: under torchrun on
    `pool.nodes` nodes with one process per GPU (one on a CPU node) when `distributed`, else one process."""
    if not distributed and pool.nodes > 1:
        raise NotImplementedError(f"multi-node {resource.kind} runs are not built yet: set spec.nodePool.nodes to 1")
    app = plan_app(resource.metadata.name, suffix, workload_image(image, pool.gpus_per_node, settings), entrypoint,
                   replicas=pool.nodes, gpus=pool.gpus_per_node)
    compute = Compute(image=image, resources=pool.resources, placement=pool, nodes=pool.nodes,
                      processes_per_node=max(1, pool.gpus_per_node), gpus_per_node=pool.gpus_per_node,
                      backoff_limit=backoff_limit, active_deadline_seconds=active_deadline_seconds,
                      queue_name=pool.queue_name, credentials_secret=output.credentials_secret, secret_env=secret_env)
    return LaunchPlan(run=f"{resource.metadata.name}-{suffix}-{resource.metadata.generation or 1}", app=app,
                      launcher=Launcher.TORCHRUN if distributed else Launcher.PROCESS, config=config,
                      reads={k: v for k, v in reads.items() if v}, writes=writes, artifact_uri=artifact_uri,
                      compute=compute)


def with_final_metrics(status: TrainingStatus, observation: RunObservation) -> None:
    """A succeeded run's final losses as the workload reported them on the result channel: shown even when no
    progress line was read after the last step (the log is read on a timer, the result once at the end)."""
    result = observation.result
    if status.phase is not Phase.SUCCEEDED or result is None or not result.metrics:
        return
    current = status.metrics.to_wire() if status.metrics else {}
    status.metrics = TrainingMetrics.model_validate({**current, **result.metrics})
