"""Shared by the single-pod workload kinds that consume other resources' artifacts (FineTune, Evaluation)."""

from __future__ import annotations

import json
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import ImageSpec, ModelRef, NodePool, Output, Resource
from llmops.operator.runtime.settings import OperatorSettings

from .dependencies import Dependency, dependency
from .jobs import CONFIG_DIR, CONFIG_FILE, KubernetesOptions, job_from_plan
from .objects import labels, metadata


def model_reference(ref: ModelRef) -> tuple[str, str] | None:
    if ref.pretrain_job:
        return ("PretrainJob", ref.pretrain_job)
    if ref.fine_tune:
        return ("FineTune", ref.fine_tune)
    return None


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


def single_pod_children(resource: Resource, suffix: str, entrypoint: str, config: dict[str, Any], *,
                        pool: NodePool, image: ImageSpec, backoff_limit: int, output: Output,
                        pvc_uris: tuple[str, ...], settings: OperatorSettings) -> list[dict[str, Any]]:
    """ConfigMap with the workload's config, and a one-pod Job running `entrypoint --config FILE`."""
    if pool.nodes > 1:
        raise NotImplementedError(f"multi-node {resource.kind} runs are not built yet: set spec.nodePool.nodes to 1")
    meta = metadata(resource, f"{suffix}-{resource.metadata.generation or 1}")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                  "data": {CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True)}}
    role = specs.Role(name=suffix, image=workload_image(image, pool.gpus_per_node, settings), entrypoint=entrypoint,
                      args=["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
                      resource=specs.Resource(cpu=-1, gpu=pool.gpus_per_node, memMB=-1))
    options = KubernetesOptions(
        config_map=meta["name"], resources=pool.resources, placement=pool, image=image, backoff_limit=backoff_limit,
        queue_name=pool.queue_name, credentials_secret=output.credentials_secret,
        pvc_uris=tuple(u for u in pvc_uris if u), labels=labels(resource))
    return [config_map, job_from_plan(specs.AppDef(name=resource.metadata.name, roles=[role]), meta, options)]
