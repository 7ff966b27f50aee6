"""Structured pruning (method prune): it removes what measurably matters least, and writes a smaller model that
transformers loads."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from llmops.trainer.compress.prune import KEPT_CHANNELS_FILE, narrow_mlp, prune
from llmops.trainer.config.finetune import PruneConfig

BIN = Path(sys.executable).parent

CALIBRATION = [  # Hamlet, the text the base_model fixture was trained on
    "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.",
    "Something is rotten in the state of Denmark.",
    "There are more things in heaven and earth, Horatio, than are dreamt of in your philosophy.",
    "Frailty, thy name is woman! A little month, or ere those shoes were old with which she followed "
    "my poor father's body, like Niobe, all tears.",
    "Neither a borrower nor a lender be; for loan oft loses both itself and friend.",
    "The lady doth protest too much, methinks.",
    "Though this be madness, yet there is method in it.",
    "Good night, sweet prince, and flights of angels sing thee to thy rest!",
]

IDENTITY_LAYER = 2
LAYER_TYPES = ["full_attention", "full_attention", "sliding_attention", "full_attention"]


def depth(layers: int, **extra: int) -> PruneConfig:
    return PruneConfig.model_validate({"axis": "depth", "numLayers": layers, **extra})


def width(channels: int) -> PruneConfig:
    return PruneConfig.model_validate({"axis": "width", "intermediateSize": channels})


@pytest.fixture
def four_layers_one_an_identity(base_model: Path, tmp_path: Path) -> Path:
    """A random 4-layer Llama (with base_model's tokenizer) whose layer 2 adds nothing to the residual stream:
    its attention output and MLP output projections are zero. layer_types, one entry per layer, marks it."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # A wide initialisation, so that every other layer turns the hidden state measurably.
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, initializer_range=0.2,
                                         layer_types=LAYER_TYPES, sliding_window=64,
                                         eos_token_id=tokenizer.eos_token_id))
    with torch.no_grad():
        model.model.layers[IDENTITY_LAYER].self_attn.o_proj.weight.zero_()
        model.model.layers[IDENTITY_LAYER].mlp.down_proj.weight.zero_()
    out = tmp_path / "four-layers"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(eos_token_id=tokenizer.eos_token_id, do_sample=False, max_new_tokens=7).save_pretrained(out)
    return out


def dead_channels_per_layer(layers: int, count: int, of: int) -> list[list[int]]:
    rng = random.Random(0)
    return [sorted(rng.sample(range(of), count)) for _ in range(layers)]


def with_dead_channels(base_model: Path, dead: list[list[int]], out: Path) -> Path:
    """base_model with the given MLP channels of each layer switched off: up_proj row and down_proj column zero, so
    the channel's activation is 0 and it adds nothing either."""
    model = AutoModelForCausalLM.from_pretrained(base_model)
    with torch.no_grad():
        for layer, channels in zip(model.model.layers, dead, strict=True):
            layer.mlp.up_proj.weight[channels] = 0
            layer.mlp.down_proj.weight[:, channels] = 0
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(out)
    return out


def next_token_logits(model: torch.nn.Module, tokenizer_dir: Path, texts: list[str]) -> torch.Tensor:
    """Logits at every position of every text, concatenated: (tokens, vocab)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with torch.no_grad():
        return torch.cat([model(**tokenizer(text, return_tensors="pt")).logits[0] for text in texts])


def mean_kl(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over positions of KL(reference || model) between next-token distributions."""
    return float(F.kl_div(logits.log_softmax(-1), reference.log_softmax(-1), log_target=True,
                          reduction="batchmean"))


def load(directory: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(directory).eval()


def test_depth_pruning_drops_the_layer_that_does_nothing_and_the_logits_stay(four_layers_one_an_identity: Path,
                                                                             tmp_path: Path) -> None:
    base = four_layers_one_an_identity
    summary = prune(base, depth(3), CALIBRATION, tmp_path / "pruned")

    assert summary["axis"] == "depth"
    assert summary["importance"][IDENTITY_LAYER] == 0.0  # its output is its input: cosine 1
    assert all(score > 0.01 for i, score in enumerate(summary["importance"]) if i != IDENTITY_LAYER)
    assert summary["kept"] == [0, 1, 3]

    pruned = load(tmp_path / "pruned")
    assert pruned.config.num_hidden_layers == 3 and len(pruned.model.layers) == 3
    assert pruned.config.layer_types == [LAYER_TYPES[i] for i in (0, 1, 3)]
    assert summary["parameters"] == pruned.num_parameters() < summary["parametersBefore"] == load(
        base).num_parameters()
    torch.testing.assert_close(next_token_logits(pruned, base, CALIBRATION),
                               next_token_logits(load(base), base, CALIBRATION), atol=1e-5, rtol=1e-5)
    assert GenerationConfig.from_pretrained(tmp_path / "pruned").max_new_tokens == 7  # the base's, carried over


def test_calibration_is_cut_to_the_context_and_counted(four_layers_one_an_identity: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(four_layers_one_an_identity)
    short, long = CALIBRATION[1], " ".join(CALIBRATION)
    assert len(tokenizer(long)["input_ids"]) > 64  # the fixture's max_position_embeddings

    summary = prune(four_layers_one_an_identity, depth(2), [short, long], tmp_path / "pruned")
    assert summary["calibrationTokens"] == len(tokenizer(short)["input_ids"]) + 64


def test_width_pruning_of_dead_channels_leaves_the_logits_unchanged(base_model: Path, tmp_path: Path) -> None:
    layers, intermediate = 2, AutoModelForCausalLM.from_pretrained(base_model).config.intermediate_size
    dead = dead_channels_per_layer(layers, 16, intermediate)
    base = with_dead_channels(base_model, dead, tmp_path / "base")

    summary = prune(base, width(intermediate - 16), CALIBRATION, tmp_path / "pruned")

    pruned = load(tmp_path / "pruned")
    assert pruned.config.intermediate_size == intermediate - 16 == summary["kept"]
    mlp = pruned.model.layers[0].mlp
    assert (mlp.gate_proj.out_features, mlp.up_proj.out_features, mlp.down_proj.in_features) == (
        intermediate - 16,) * 3
    kept = json.loads((tmp_path / "pruned" / KEPT_CHANNELS_FILE).read_text())["keptChannels"]
    assert all(set(channels).isdisjoint(off) for channels, off in zip(kept, dead, strict=True))
    assert summary["importanceKept"] == [1.0, 1.0]  # a dead channel holds none of the importance
    torch.testing.assert_close(next_token_logits(pruned, base, CALIBRATION),
                               next_token_logits(load(base), base, CALIBRATION), atol=1e-5, rtol=1e-5)


def test_keeping_the_most_active_channels_changes_the_logits_less_than_keeping_random_ones(
        base_model: Path, tmp_path: Path) -> None:
    base = load(base_model)
    intermediate, keep = base.config.intermediate_size, base.config.intermediate_size // 2
    reference = next_token_logits(base, base_model, CALIBRATION)

    prune(base_model, width(keep), CALIBRATION, tmp_path / "pruned")
    by_importance = mean_kl(reference, next_token_logits(load(tmp_path / "pruned"), base_model, CALIBRATION))

    rng = random.Random(0)
    by_chance = [mean_kl(reference, next_token_logits(
        narrow_mlp(base, [sorted(rng.sample(range(intermediate), keep)) for _ in base.model.layers]),
        base_model, CALIBRATION)) for _ in range(3)]
    print(f"mean KL to the base model: importance {by_importance:.2e}, random {[f'{k:.2e}' for k in by_chance]}")
    assert by_importance < min(by_chance)


@pytest.mark.parametrize(("config", "field"), [
    ({"axis": "depth", "numLayers": 4}, "prune.numLayers"),  # as many as the model has
    ({"axis": "depth", "numLayers": 5}, "prune.numLayers"),
    ({"axis": "width", "intermediateSize": 64}, "prune.intermediateSize"),
    ({"axis": "width", "intermediateSize": 1000}, "prune.intermediateSize"),
])
def test_a_target_that_does_not_shrink_the_model_is_rejected_naming_the_field(
        four_layers_one_an_identity: Path, tmp_path: Path, config: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        prune(four_layers_one_an_identity, PruneConfig.model_validate(config), CALIBRATION, tmp_path / "pruned")
    assert not (tmp_path / "pruned").exists()


def test_no_calibration_text_is_rejected(four_layers_one_an_identity: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration text"):
        prune(four_layers_one_an_identity, depth(2), [], tmp_path / "pruned")
    with pytest.raises(ValueError, match="no tokens"):
        prune(four_layers_one_an_identity, depth(2), [""], tmp_path / "pruned")


def test_llmops_finetune_prunes_from_the_command_line(base_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "calibration.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in CALIBRATION))
    config = tmp_path / "prune.yaml"
    config.write_text(yaml.safe_dump({
        "baseUri": str(base_model), "dataUri": str(data), "outputUri": str(tmp_path / "out"), "method": "prune",
        "prune": {"axis": "depth", "numLayers": 1, "calibrationExamples": 6},
        # A transform has no optimisation loop, but the run config still needs training settings that validate.
        "training": {"maxSteps": 1, "schedule": {"warmupSteps": 0}}}))

    result = subprocess.run([str(BIN / "llmops-finetune"), "--config", str(config)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})

    assert result.returncode == 0, result.stderr[-3000:]
    model = tmp_path / "out" / "model"
    assert load(model).config.num_hidden_layers == 1
    card = (model / "model-card.md").read_text()
    assert f"| original | {base_model} |" in card and "| method | prune |" in card
