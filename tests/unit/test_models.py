"""The typed models: the operator and the trainer read specs through them, with the same rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmops.operator.api.v1alpha1 import KINDS, Deployment, FineTune, PretrainJob
from llmops.trainer.config.data import PipelineConfig, Source
from llmops.trainer.config.model import ModelConfig
from tests.bad_manifests import BAD_CASES, BadCase
from tests.conftest import example


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_pydantic_rejects_every_bad_manifest_naming_the_field(case: BadCase) -> None:
    with pytest.raises(ValidationError) as caught:
        KINDS[case.kind].model_validate(case.manifest())
    assert case.want_field in str(caught.value)


def test_wire_form_round_trips() -> None:
    job = PretrainJob.model_validate(example("PretrainJob"))
    again = PretrainJob.model_validate({**example("PretrainJob"), "spec": job.spec.to_wire()})
    assert again.spec == job.spec


def test_fields_are_snake_case_in_python_and_camel_case_on_the_wire() -> None:
    job = PretrainJob.model_validate(example("PretrainJob"))
    assert job.spec.model.hidden_size == 128
    assert job.spec.node_pool.gpus_per_node == 0
    assert job.spec.to_wire()["nodePool"]["gpusPerNode"] == 0


def test_fine_tune_defaults_to_one_epoch_when_training_is_omitted() -> None:
    manifest = example("FineTune")
    del manifest["spec"]["training"]
    spec = FineTune.model_validate(manifest).spec
    assert spec.training.epochs == 1.0
    assert spec.training.optimizer.learning_rate == 2e-5


def test_deployment_canary_steps_keep_their_order() -> None:
    spec = Deployment.model_validate(example("Deployment")).spec
    assert [step.weight for step in spec.canary.steps] == [10, 50, 100]


def test_dataset_trains_a_tokenizer_unless_told_otherwise() -> None:
    config = PipelineConfig(sources=[Source(name="a", uri="/data")])
    assert config.tokenizer.train is not None
    assert config.tokenizer.train.vocab_size == 8192


def test_parameter_count_matches_a_hand_count() -> None:
    config = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, kv_heads=2, intermediate_size=128)
    head_dim = 16
    attention = 64 * head_dim * (4 + 4) + 2 * (64 * head_dim * 2)  # q and o: 4 heads; k and v: 2 heads
    mlp = 3 * 64 * 128
    per_layer = attention + mlp + 2 * 64
    assert config.parameter_count(vocab_size=100) == 2 * per_layer + 100 * 64 + 64


def test_default_intermediate_size_is_swiglu_sized() -> None:
    assert ModelConfig(hidden_size=256).resolved_intermediate_size == 704  # 8/3 * 256 = 682.7 -> 704
