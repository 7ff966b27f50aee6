"""The exported model as a user meets it: loaded with transformers' Auto classes, used with the standard
idiom, and readable by a server running as another user on a shared volume."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llmops.trainer.train.export import export

EOS = "<|endoftext|>"


def modes(directory: Path) -> dict[str, int]:
    """Permission bits of the directory and of everything under it, by path relative to it."""
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in directory.rglob("*"):
        found[str(path.relative_to(directory))] = stat.S_IMODE(path.stat().st_mode)
    return found


def assert_world_readable(directory: Path) -> None:
    found = modes(directory)
    assert "model.safetensors" in found
    wrong = {name: oct(mode) for name, mode in found.items()
             if mode != (0o755 if (directory / name).is_dir() else 0o644)}
    assert not wrong, f"want files 0644 and directories 0755, got {wrong}"


def generate_with_the_standard_idiom(directory: Path, prompt: str) -> tuple[dict, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    return dict(inputs), out


@pytest.fixture
def exported_under_a_strict_umask(tmp_path: Path) -> Path:
    """A tiny random model exported under umask 077 with a plain fast tokenizer, which returns token_type_ids
    unless told otherwise (as a fine-tuned model's base tokenizer may)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(["the king is dead, long live the king"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS]))
    bpe.save(str(tmp_path / "tokenizer.json"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), eos_token=EOS)
    assert "token_type_ids" in tokenizer("x")  # the trap this export must not pass on
    model = LlamaForCausalLM(LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                                         eos_token_id=bpe.token_to_id(EOS)))
    previous = os.umask(0o077)
    try:
        return export(model, tokenizer, tmp_path / "model", summary={"steps": 0}, lineage={"data": "test"},
                      history=[{"step": 1, "loss": 5.0}])
    finally:
        os.umask(previous)


@pytest.mark.slow
def test_a_pretrained_export_generates_with_the_standard_transformers_idiom(base_model: Path) -> None:
    inputs, out = generate_with_the_standard_idiom(base_model, "To be, or not to be")
    assert set(inputs) == {"input_ids", "attention_mask"}
    prompt_length = inputs["input_ids"].shape[1]
    assert out.shape == (1, prompt_length + 6) and torch.equal(out[:, :prompt_length], inputs["input_ids"])


@pytest.mark.slow
def test_every_file_of_a_pretrained_export_is_world_readable(base_model: Path) -> None:
    assert_world_readable(base_model)


def test_an_export_drops_token_type_ids_whatever_tokenizer_it_was_given(exported_under_a_strict_umask: Path) -> None:
    inputs, out = generate_with_the_standard_idiom(exported_under_a_strict_umask, "the king")
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert out.shape[1] == inputs["input_ids"].shape[1] + 6


def test_an_export_is_world_readable_under_a_strict_umask(exported_under_a_strict_umask: Path) -> None:
    assert_world_readable(exported_under_a_strict_umask)
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "lineage.json",
            "model-card.md", "loss-curve.png"} <= set(modes(exported_under_a_strict_umask))
