"""FineTune: wait for its base model (a PretrainJob's or another FineTune's) and data, then train: one process
running the workload, or, for several nodes or GPUs, torchrun over the node pool as a PretrainJob does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmops.operator.api.v1alpha1 import FineTune
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.finetune import FineTuneRunConfig
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


def references(ft: FineTune) -> list[tuple[str, str]]:
    out = [target] if (target := model_reference(ft.spec.base)) else []
    return out + ([("Dataset", ft.spec.data.dataset)] if ft.spec.data.dataset else [])


def plan(ft: FineTune, refs: dict[tuple[str, str], Any], settings: OperatorSettings) -> LaunchPlan | Waiting:
    spec = ft.spec
    base = resolve_model(spec.base, refs)
    if not base.ready:
        what = " ".join(model_reference(spec.base) or ("model", ""))
        return Waiting(what, base.message, base.failed)
    data_uri, inputs = spec.data.uri, [base.input]
    if spec.data.dataset:
        data = dependency("Dataset", spec.data.dataset, refs.get(("Dataset", spec.data.dataset)))
        if not data.ready or not data.artifact_uri:
            return Waiting(f"Dataset {spec.data.dataset}", data.message, data.failed)
        data_uri, inputs = join(data.artifact_uri, DOCUMENTS_FILE), [*inputs, data.input]
    assert base.artifact_uri and data_uri
    output = output_root(ft, settings)
    method_settings = {k: v for k, v in (("sft", spec.sft), ("lora", spec.lora), ("dpo", spec.dpo)) if v is not None}
    config = FineTuneRunConfig(
        base_uri=base.artifact_uri, data_uri=data_uri, output_uri=output,
        method=spec.method, classification=spec.classification, training=spec.training, checkpoint=spec.checkpoint,
        **method_settings,
        data=spec.data.model_dump(include={"fields", "validation_fraction", "max_examples", "max_length"}),
        lineage={"fineTune": f"{ft.metadata.namespace}/{ft.metadata.name}", "base": base.artifact_uri})
    return training_plan(
        ft, SUFFIX, ENTRYPOINT, config.to_wire(), pool=spec.node_pool, image=spec.image,
        backoff_limit=spec.backoff_limit, output=spec.output, reads={"base": base.artifact_uri, "data": data_uri},
        writes=output, artifact_uri=model_uri(output), settings=settings, distributed=is_distributed(spec.node_pool),
        active_deadline_seconds=spec.active_deadline_seconds, inputs=tuple(i for i in inputs if i is not None))


def complete(ft: FineTune, status: TrainingStatus, plan: LaunchPlan, observation: RunObservation,
             refs: dict[tuple[str, str], Any], now: datetime) -> list[Event]:
    with_training_result(status, observation, plan.writes)
    return []
