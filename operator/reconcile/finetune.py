"""FineTune: wait for its base model (a PretrainJob's or another FineTune's) and data, then train: one process
running the workload, or, for several nodes or GPUs, torchrun over the node pool as a PretrainJob does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import FineTune
from llmops.operator.api.v1alpha1.common import ModelRef
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.finetune import DistillConfig, FineTuneRunConfig
from llmops.trainer.config.layout import join, model_uri

from .defaults import output_root
from .dependencies import dependency
from .plan import LaunchPlan, RunObservation, Waiting
from .training import is_distributed, model_reference, resolve_model, training_plan, with_training_result
from .workload import Event

ENTRYPOINT = "llmops-finetune"
SUFFIX = "finetune"
DOCUMENTS_FILE = "documents.jsonl"
"""The file of a Dataset's output a FineTune trains on (its cleaned documents)."""


def model_refs(ft: FineTune) -> list[ModelRef]:
    """The models a FineTune reads: its base, and a distillation's teacher."""
    return [ft.spec.base, *([ft.spec.distill.teacher] if ft.spec.distill else [])]


def references(ft: FineTune) -> list[tuple[str, str]]:
    out = [target for ref in model_refs(ft) if (target := model_reference(ref))]
    return out + ([("Dataset", ft.spec.data.dataset)] if ft.spec.data and ft.spec.data.dataset else [])


def plan(ft: FineTune, refs: dict[tuple[str, str], Any], settings: OperatorSettings) -> LaunchPlan | Waiting:
    spec = ft.spec
    models = []
    for ref in model_refs(ft):
        model = resolve_model(ref, refs)
        if not model.ready:
            what = " ".join(model_reference(ref) or ("model", ""))
            return Waiting(what, model.message, model.failed)
        models.append(model)
    base, teacher = models[0], (models[1] if len(models) > 1 else None)
    data_uri, inputs = spec.data.uri if spec.data else None, [m.input for m in models]
    if spec.data and spec.data.dataset:
        data = dependency("Dataset", spec.data.dataset, refs.get(("Dataset", spec.data.dataset)))
        if not data.ready or not data.artifact_uri:
            return Waiting(f"Dataset {spec.data.dataset}", data.message, data.failed)
        data_uri, inputs = join(data.artifact_uri, DOCUMENTS_FILE), [*inputs, data.input]
    assert base.artifact_uri
    output = output_root(ft, settings)
    blocks = ("sft", "lora", "dpo", "reward", "quantize", "prune")
    method_settings = {k: v for k in blocks if (v := getattr(spec, k)) is not None}
    if spec.distill is not None:
        method_settings["distill"] = DistillConfig.model_validate(spec.distill.model_dump(exclude={"teacher"}))
    teacher_uri = teacher.artifact_uri if teacher else None
    lineage = {"fineTune": f"{ft.metadata.namespace}/{ft.metadata.name}", "base": base.artifact_uri,
               **({"teacher": teacher_uri} if teacher_uri else {})}
    config = FineTuneRunConfig(
        base_uri=base.artifact_uri, data_uri=data_uri, teacher_uri=teacher_uri, output_uri=output,
        method=spec.method, classification=spec.classification, training=spec.training, checkpoint=spec.checkpoint,
        **method_settings,
        data=spec.data.model_dump(include={"fields", "validation_fraction", "max_examples", "max_length"})
        if spec.data else {},
        lineage=lineage)
    reads = {"base": base.artifact_uri, "data": data_uri or "", "teacher": teacher_uri or ""}
    return training_plan(
        ft, SUFFIX, ENTRYPOINT, config.to_wire(), pool=spec.node_pool, image=spec.image,
        backoff_limit=spec.backoff_limit, output=spec.output, reads=reads,
        writes=output, artifact_uri=model_uri(output), settings=settings, distributed=is_distributed(spec.node_pool),
        active_deadline_seconds=spec.active_deadline_seconds, inputs=tuple(i for i in inputs if i is not None))


def complete(ft: FineTune, status: TrainingStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    with_training_result(status, observation, plan.writes)
    return []
