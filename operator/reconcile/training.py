"""Shared by the training and evaluation kinds: model references, their launch plan, and what a run reports:
one process running the workload, or torchrun over a node pool (PretrainJob always, FineTune when distributed)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from llmops.operator.api.v1alpha1.common import ImageSpec, ModelRef, NodePool, Output, Phase, Resource, RunInput
from llmops.operator.api.v1alpha1.pretrainjob import TrainingMetrics, TrainingStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.layout import checkpoints_uri, join
from llmops.trainer.config.result import CheckpointStatus

from .defaults import workload_image
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


def is_distributed(pool: NodePool) -> bool:
    """More than one training process: several pods, or several GPUs (one process each) in one pod."""
    return pool.nodes > 1 or pool.gpus_per_node > 1


def training_plan(resource: Resource, suffix: str, entrypoint: str, config: dict[str, Any], *, pool: NodePool,
                  image: ImageSpec, backoff_limit: int, output: Output, reads: dict[str, str], writes: str,
                  artifact_uri: str, settings: OperatorSettings, distributed: bool,
                  active_deadline_seconds: int | None = None, secret_env: tuple[SecretEnv, ...] = (),
                  inputs: tuple[RunInput, ...] = ()) -> LaunchPlan:
    """The plan of a run `<name>-<suffix>-<number>` of `entrypoint --config FILE` (numbered by generation until
    `workload.decide` numbers it by its inputs too): under torchrun on
    `pool.nodes` nodes with one process per GPU (one on a CPU node) when `distributed`, else one process."""
    if not distributed and pool.nodes > 1:
        raise NotImplementedError(f"multi-node {resource.kind} runs are not built yet: set spec.nodePool.nodes to 1")
    app = plan_app(resource.metadata.name, suffix, workload_image(image, settings, pool.gpus_per_node), entrypoint,
                   replicas=pool.nodes, gpus=pool.gpus_per_node)
    compute = Compute(image=image, resources=pool.resources, placement=pool, nodes=pool.nodes,
                      processes_per_node=max(1, pool.gpus_per_node), gpus_per_node=pool.gpus_per_node,
                      backoff_limit=backoff_limit, active_deadline_seconds=active_deadline_seconds,
                      queue_name=pool.queue_name, credentials_secret=output.credentials_secret, secret_env=secret_env)
    return LaunchPlan(suffix=suffix, number=resource.metadata.generation or 1, app=app,
                      launcher=Launcher.TORCHRUN if distributed else Launcher.PROCESS, config=config,
                      reads={k: v for k, v in reads.items() if v}, writes=writes, artifact_uri=artifact_uri,
                      compute=compute, inputs=inputs)


def with_training_result(status: TrainingStatus, observation: RunObservation, writes: str) -> None:
    """What a succeeded run reported on the result channel: its final losses (shown even when no progress line was
    read after the last step: the log is read on a timer, the result once at the end), its trainable parameters
    and its newest checkpoint (under `writes`, the run's output root)."""
    result = observation.result
    if status.phase is not Phase.SUCCEEDED or result is None:
        return
    if result.metrics:
        current = status.metrics.to_wire() if status.metrics else {}
        status.metrics = TrainingMetrics.model_validate({**current, **result.metrics})
    status.parameters = result.parameters if result.parameters is not None else status.parameters
    if result.checkpoint is not None:  # named as the workload sees it (a mount path in a pod); status keeps URIs
        step_dir = PurePosixPath(result.checkpoint.uri.rstrip("/")).name
        status.checkpoint = CheckpointStatus(step=result.checkpoint.step,
                                             uri=join(checkpoints_uri(writes), step_dir))
