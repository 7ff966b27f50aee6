"""Long context (spec.model.ropeScaling): each scaling computes what transformers computes, survives export
to a Hugging Face directory, and bad forms are rejected naming the field, by pydantic and by admission."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoConfig, LlamaForCausalLM

from llmops.operator.api.admission import AdmissionError, admit
from llmops.trainer.config.model import ModelConfig, RopeScaling, RopeScalingType
from llmops.trainer.train.model import (
    RotaryEmbedding,
    Transformer,
    build_model,
    default_frequencies,
    hf_config,
    to_huggingface,
    yarn_frequencies,
)
from tests.conftest import example, patched

ORIGINAL = 32
"""The context the model was 'pretrained' at; every scaling stretches it to CONTEXT."""
CONTEXT = 96
VOCAB = 97

SCALINGS = {
    "linear": RopeScaling(type=RopeScalingType.LINEAR, factor=3.0),
    "dynamic": RopeScaling(type=RopeScalingType.DYNAMIC, factor=3.0, original_context_length=ORIGINAL),
    "yarn": RopeScaling(type=RopeScalingType.YARN, factor=3.0, original_context_length=ORIGINAL),
    "yarn, every knob set": RopeScaling(type=RopeScalingType.YARN, factor=3.0, original_context_length=ORIGINAL,
                                        beta_fast=16.0, beta_slow=2.0, attention_factor=1.3),
}


def model_with(scaling: RopeScaling | None) -> Transformer:
    # head_dim 32: wide enough that yarn's ramp has pairs kept, blended and interpolated.
    config = ModelConfig(hidden_size=128, num_layers=2, num_heads=4, kv_heads=2, context_length=CONTEXT,
                         rope_scaling=scaling)
    torch.manual_seed(0)
    return build_model(config, vocab_size=VOCAB, eos_id=0).eval()


def tokens(length: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def assert_same_logits(ours: Transformer, theirs: LlamaForCausalLM, length: int) -> None:
    ids = tokens(length)
    assert torch.allclose(ours(ids), theirs(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("scaling", SCALINGS.values(), ids=SCALINGS.keys())
def test_same_logits_as_transformers_beyond_the_original_context(scaling: RopeScaling) -> None:
    ours = model_with(scaling)
    assert_same_logits(ours, to_huggingface(ours), CONTEXT)


@pytest.mark.parametrize("scaling", SCALINGS.values(), ids=SCALINGS.keys())
def test_scaling_changes_what_the_model_computes_at_long_positions(scaling: RopeScaling) -> None:
    ids = tokens(CONTEXT)
    with torch.no_grad():
        assert not torch.allclose(model_with(scaling)(ids), model_with(None)(ids), atol=1e-4)


def test_dynamic_changes_nothing_within_the_original_context() -> None:
    dynamic = model_with(SCALINGS["dynamic"])
    ids = tokens(ORIGINAL)
    with torch.no_grad():
        assert torch.equal(dynamic(ids), model_with(None)(ids))
    # A fresh export: transformers' dynamic rotary keeps a grown base for later, shorter calls.
    assert_same_logits(dynamic, to_huggingface(dynamic), ORIGINAL)


def test_dynamic_base_grows_with_each_longer_sequence() -> None:
    dynamic = model_with(SCALINGS["dynamic"])
    for length in (ORIGINAL + 1, 2 * ORIGINAL, CONTEXT):
        assert_same_logits(dynamic, to_huggingface(dynamic), length)


@pytest.mark.parametrize("scaling", SCALINGS.values(), ids=SCALINGS.keys())
def test_export_round_trips_through_a_hugging_face_directory(scaling: RopeScaling, tmp_path: Path) -> None:
    ours = model_with(scaling)
    to_huggingface(ours).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.rope_scaling == scaling.to_transformers()
    assert config.rope_scaling["rope_type"] == scaling.type.value and config.rope_scaling["factor"] == 3.0
    # transformers' dynamic NTK grows the base past max_position_embeddings, so that holds the original context.
    expected_max = ORIGINAL if scaling.type == RopeScalingType.DYNAMIC else CONTEXT
    assert config.max_position_embeddings == expected_max
    assert_same_logits(ours, LlamaForCausalLM.from_pretrained(tmp_path).eval(), CONTEXT)


def test_transformers_dict_names_the_keys_transformers_reads() -> None:
    assert SCALINGS["linear"].to_transformers() == {"rope_type": "linear", "factor": 3.0}
    assert SCALINGS["dynamic"].to_transformers() == {
        "rope_type": "dynamic", "factor": 3.0, "original_max_position_embeddings": ORIGINAL}
    assert SCALINGS["yarn, every knob set"].to_transformers() == {
        "rope_type": "yarn", "factor": 3.0, "original_max_position_embeddings": ORIGINAL,
        "beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.3}
    assert SCALINGS["yarn"].to_transformers()["beta_fast"] == 32.0  # the YaRN paper's defaults, written out
    assert SCALINGS["yarn"].to_transformers()["beta_slow"] == 1.0


@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_linear_scaling_reads_position_p_as_p_over_factor(factor: float) -> None:
    scaled = RotaryEmbedding(32, 64, 10000.0, RopeScaling(type=RopeScalingType.LINEAR, factor=factor))
    plain = RotaryEmbedding(32, 64, 10000.0)
    cos, sin = scaled(64)
    step = int(factor)
    assert torch.allclose(cos[::step], plain.cos[: 64 // step], atol=1e-6)
    assert torch.allclose(sin[::step], plain.sin[: 64 // step], atol=1e-6)


def test_yarn_keeps_fast_pairs_interpolates_slow_ones_and_blends_between() -> None:
    scaling = SCALINGS["yarn"]
    ratio = yarn_frequencies(32, 10000.0, scaling) / default_frequencies(32, 10000.0)
    # head_dim 32 over 32 positions: pair 0 turns > beta_fast times, pairs from 3 on turn < beta_slow times.
    assert ratio[0] == pytest.approx(1.0)
    assert torch.allclose(ratio[3:], torch.full((13,), 1 / 3))
    assert 1 / 3 < ratio[2] < ratio[1] < 1.0


def test_yarn_multiplies_cos_and_sin_by_the_attention_factor() -> None:
    default = RotaryEmbedding(32, 8, 10000.0, SCALINGS["yarn"])
    assert default.cos[0] == pytest.approx(torch.full((32,), 0.1 * math.log(3.0) + 1.0))
    assert RotaryEmbedding(32, 8, 10000.0, SCALINGS["yarn, every knob set"]).cos[0] == pytest.approx(
        torch.full((32,), 1.3))


# Each bad form of spec.model.ropeScaling, with the field its rejection must name.
BAD_FORMS: dict[str, tuple[dict[str, Any], str]] = {
    "dynamic without originalContextLength": ({"type": "dynamic", "factor": 2}, "originalContextLength"),
    "yarn without originalContextLength": ({"type": "yarn", "factor": 2}, "originalContextLength"),
    "linear with originalContextLength": (
        {"type": "linear", "factor": 2, "originalContextLength": 64}, "originalContextLength"),
    "betaFast on dynamic": (
        {"type": "dynamic", "factor": 2, "originalContextLength": 64, "betaFast": 16}, "betaFast"),
    "betaSlow on linear": ({"type": "linear", "factor": 2, "betaSlow": 2}, "betaSlow"),
    "attentionFactor on dynamic": (
        {"type": "dynamic", "factor": 2, "originalContextLength": 64, "attentionFactor": 1.2}, "attentionFactor"),
    "betaFast not above betaSlow": (
        {"type": "yarn", "factor": 2, "originalContextLength": 64, "betaFast": 2, "betaSlow": 4}, "betaFast"),
    "factor of 1 scales nothing": ({"type": "linear", "factor": 1}, "factor"),
    "unknown type": ({"type": "ntk", "factor": 2}, "type"),
    "original context not below contextLength": (
        {"type": "yarn", "factor": 2, "originalContextLength": 256}, "originalContextLength"),
}


def model_spec(rope_scaling: dict[str, Any]) -> dict[str, Any]:
    # The example's valid model shape at contextLength 256, so only ropeScaling can be wrong.
    return {**example("PretrainJob")["spec"]["model"], "contextLength": 256, "ropeScaling": rope_scaling}


@pytest.mark.parametrize(("rope_scaling", "field"), BAD_FORMS.values(), ids=BAD_FORMS.keys())
def test_pydantic_rejects_a_bad_form_naming_the_field(rope_scaling: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelConfig.model_validate(model_spec(rope_scaling))
    assert field in str(caught.value)


@pytest.mark.parametrize(("rope_scaling", "field"), BAD_FORMS.values(), ids=BAD_FORMS.keys())
def test_admission_rejects_a_bad_form_at_the_field(rope_scaling: dict[str, Any], field: str) -> None:
    manifest = patched(example("PretrainJob"), {"spec": {"model": model_spec(rope_scaling)}})
    with pytest.raises(AdmissionError) as caught:
        admit(manifest)
    assert f"spec.model.ropeScaling.{field}" in [violation.path for violation in caught.value.violations]


def test_rejection_says_the_fix() -> None:
    with pytest.raises(ValidationError, match="set it to the context length the model was pretrained at"):
        ModelConfig.model_validate(model_spec({"type": "yarn", "factor": 2}))


@pytest.mark.parametrize("scaling", SCALINGS.values(), ids=SCALINGS.keys())
def test_good_forms_are_admitted(scaling: RopeScaling) -> None:
    spec = {**model_spec(scaling.to_wire()), "contextLength": CONTEXT}
    stored = admit(patched(example("PretrainJob"), {"spec": {"model": spec}}))
    assert ModelConfig.model_validate(stored["spec"]["model"]).rope_scaling == scaling


def test_the_server_and_evaluator_read_a_dynamic_export_to_its_scaled_context() -> None:
    from llmops.trainer.model_files import context_length

    shape = ModelConfig(hidden_size=64, num_layers=1, num_heads=4, context_length=512,
                        rope_scaling={"type": "dynamic", "factor": 4.0, "original_context_length": 128})
    exported = hf_config(shape, vocab_size=64)
    assert exported.max_position_embeddings == 128  # what transformers' dynamic NTK needs there
    assert context_length(exported, 2048) == 512
    linear = hf_config(shape.model_copy(update={"rope_scaling": RopeScaling(type="linear", factor=4.0)}),
                       vocab_size=64)
    assert context_length(linear, 2048) == 512 == linear.max_position_embeddings
