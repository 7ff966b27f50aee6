"""Continued pretraining (PretrainJob `init`): a run starts from an existing model's weights on new data, may
train at a longer context, records its parent, and refuses data tokenized by another tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoModelForCausalLM

from llmops.trainer.config import exit_codes
from llmops.trainer.config.training import PretrainRunConfig
from llmops.trainer.train.metrics import MetricsLog
from llmops.trainer.train.model import to_huggingface
from llmops.trainer.train.pretrain import train

BIN = Path(sys.executable).parent


def continued(dataset: Path, output: Path, init: dict[str, Any] | None, steps: int = 5) -> PretrainRunConfig:
    return PretrainRunConfig.model_validate({
        "dataUri": str(dataset), "outputUri": str(output), **({"init": init} if init else {}),
        # The conftest base model's shape: a fresh run of it is the comparison.
        "model": {"hiddenSize": 64, "numLayers": 2, "numHeads": 4, "kvHeads": 2, "contextLength": 128},
        "training": {"maxSteps": steps, "batch": {"microBatchSize": 4}, "optimizer": {"learningRate": 1e-4},
                     "schedule": {"warmupSteps": 0}, "logIntervalSteps": 1, "evalIntervalSteps": 1000},
        "checkpoint": {"intervalSteps": 1000}, "lineage": {"parent": "PretrainJob/base"}})


def first_loss(metrics: MetricsLog) -> float:
    return next(e["loss"] for e in metrics.history if "loss" in e)


def quiet() -> MetricsLog:
    return MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115


def test_a_continued_run_starts_from_the_parent_weights_and_records_it(dataset: Path, base_model: Path,
                                                                        tmp_path: Path) -> None:
    fresh, resumed = quiet(), quiet()
    train(continued(dataset, tmp_path / "fresh", None, steps=1), fresh)
    _, model = train(continued(dataset, tmp_path / "cont", {"uri": str(base_model)}, steps=1), resumed)
    # The parent already learned this text: its first step's loss is far below a random initialisation's.
    assert first_loss(resumed) < first_loss(fresh) - 0.5, (first_loss(resumed), first_loss(fresh))
    lineage = json.loads((tmp_path / "cont" / "model" / "lineage.json").read_text())
    assert lineage["init"] == str(base_model) and lineage["parent"] == "PretrainJob/base"


def test_the_parent_weights_are_loaded_exactly(dataset: Path, base_model: Path, tmp_path: Path) -> None:
    config = continued(dataset, tmp_path / "zero", {"uri": str(base_model)}, steps=1)
    config.training.optimizer.learning_rate = 1e-12  # one step that changes nothing measurable
    _, model = train(config, quiet())
    parent = AutoModelForCausalLM.from_pretrained(base_model).eval()
    ids = torch.tensor([[5, 17, 99, 3, 250, 7]])
    with torch.no_grad():
        assert torch.allclose(to_huggingface(model.eval())(ids).logits, parent(ids).logits, atol=1e-5)


def test_a_longer_context_is_trained_and_exported(dataset: Path, base_model: Path, tmp_path: Path) -> None:
    _, model = train(continued(dataset, tmp_path / "long", {"uri": str(base_model), "contextLength": 256}), quiet())
    exported = json.loads((tmp_path / "long" / "model" / "config.json").read_text())
    assert exported["max_position_embeddings"] == 256 and model.config.context_length == 256
    assert exported["hidden_size"] == 64 and exported["num_hidden_layers"] == 2  # the parent's shape


def test_a_longer_context_with_rope_scaling_exports_it_for_transformers(dataset: Path, base_model: Path,
                                                                        tmp_path: Path) -> None:
    scaling = {"type": "yarn", "factor": 4.0, "originalContextLength": 128}
    _, model = train(continued(dataset, tmp_path / "yarn", {"uri": str(base_model), "contextLength": 512,
                                                           "ropeScaling": scaling}, steps=2), quiet())
    out = tmp_path / "yarn" / "model"
    exported = json.loads((out / "config.json").read_text())
    assert exported["max_position_embeddings"] == 512
    assert exported["rope_scaling"]["rope_type"] == "yarn" and exported["rope_scaling"]["factor"] == 4.0
    ids = torch.arange(300)[None] % 500  # longer than the parent's context: the scaling is in use
    with torch.no_grad():
        ours, theirs = model.eval()(ids), AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)
    # A continuation of the continued model keeps the scaling it was exported with.
    _, again = train(continued(dataset, tmp_path / "again", {"uri": str(out)}, steps=1), quiet())
    assert again.config.rope_scaling is not None and again.config.rope_scaling.factor == 4.0


def test_data_from_another_tokenizer_is_refused_naming_the_fix(dataset: Path, base_model: Path,
                                                               tmp_path: Path) -> None:
    other = tmp_path / "other-data"
    other.mkdir()
    for item in dataset.iterdir():  # the same shards, but a tokenizer that numbers tokens differently
        (other / item.name).symlink_to(item)
    (other / "tokenizer.json").unlink()
    tokenizer = json.loads((dataset / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[300:302]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    config_file = tmp_path / "pretrain.yaml"
    config_file.write_text(yaml.safe_dump(continued(other, tmp_path / "out", {"uri": str(base_model)}).to_wire()))
    result = subprocess.run([str(BIN / "llmops-pretrain"), "--config", str(config_file)], capture_output=True,
                            text=True)
    assert result.returncode == exit_codes.CONFIG_ERROR, result.stderr
    assert "init:" in result.stderr and "spec.tokenizer.uri" in result.stderr
    assert not (tmp_path / "out" / "model").exists()


def test_a_classification_model_is_not_continued(dataset: Path, base_model: Path, tmp_path: Path) -> None:
    head = tmp_path / "classifier"
    head.mkdir()
    for item in base_model.iterdir():
        (head / item.name).symlink_to(item)
    (head / "config.json").unlink()
    config = json.loads((base_model / "config.json").read_text())
    (head / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    config_file = tmp_path / "pretrain.yaml"
    config_file.write_text(yaml.safe_dump(continued(dataset, tmp_path / "out", {"uri": str(head)}).to_wire()))
    result = subprocess.run([str(BIN / "llmops-pretrain"), "--config", str(config_file)], capture_output=True,
                            text=True)
    assert result.returncode == exit_codes.CONFIG_ERROR and "Llama causal LM" in result.stderr
