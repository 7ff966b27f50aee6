"""Shared by the single-pod workload kinds that consume other resources' artifacts (FineTune, Evaluation)."""

from __future__ import annotations

import json
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import ModelRef, Resource
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


def single_pod_children(resource: Resource, suffix: str, entrypoint: str, config: dict[str, Any],
                        options: dict[str, Any], image: str, gpus: int) -> list[dict[str, Any]]:
    """ConfigMap with the workload's config, and a one-pod Job running `entrypoint --config FILE`."""
    meta = metadata(resource, f"{suffix}-{resource.metadata.generation or 1}")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                  "data": {CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True)}}
    role = specs.Role(name=suffix, image=image, entrypoint=entrypoint,
                      args=["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
                      resource=specs.Resource(cpu=-1, gpu=gpus, memMB=-1))
    job = job_from_plan(specs.AppDef(name=resource.metadata.name, roles=[role]), meta,
                        KubernetesOptions(config_map=meta["name"], labels=labels(resource), **options))
    return [config_map, job]
