"""Knowledge distillation (FineTune method distill): a student learns a frozen teacher's next-token distributions.

The teacher is loaded once per process, frozen and in eval mode, runs under no_grad and is never wrapped in DDP:
only the student's gradients are averaged, and only the student is checkpointed and exported. The student is
the base model, or with `distill.student` a fresh model of that shape (our Llama, converted to transformers'
LlamaForCausalLM like every export). Both must number tokens alike, since the KL compares distributions id by id.

loss = (1 - w) * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + w * CE(data), w = crossEntropyWeight,
both terms averaged over the positions that predict a real (non-padding) token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from llmops.trainer.config.finetune import FineTuneRunConfig

from .finetune import IGNORE, pad, record_text
from .model import build_model, to_huggingface


@dataclass
class Teacher:
    model: PreTrainedModel
    vocabulary: int
    """Tokens the shared tokenizer knows. Logits beyond it (an embedding padded to a round size) are dropped from
    both models, so a student sized to the tokenizer compares with any teacher."""


def load_teacher(directory: Path, device: torch.device) -> PreTrainedModel:
    teacher = AutoModelForCausalLM.from_pretrained(directory).to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def check_same_tokenizer(base_tokenizer: Any, teacher_tokenizer: Any, config: FineTuneRunConfig) -> None:
    """The student reads and writes token ids with the base's tokenizer; they must mean what they mean to the
    teacher, or the student would learn the teacher's distribution over the wrong tokens."""
    ours, theirs = base_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if ours == theirs:
        return
    differing = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda item: item[1])[:3]
    raise ValueError(
        f"distill: the tokenizer of base {config.base_uri} ({len(ours)} tokens) is not that of distill.teacher "
        f"{config.teacher_uri} ({len(theirs)} tokens; e.g. {', '.join(f'{t!r}={i}' for t, i in differing)} "
        "differ): a student learns the teacher's distributions token id by token id, so base must use the "
        "teacher's tokenizer")


def build_student(config: FineTuneRunConfig, base: Path, vocabulary: int, eos_id: int | None) -> PreTrainedModel:
    """The base model, or a fresh model of distill.student's shape (weights from the global torch seed)."""
    shape = config.distill.student
    if shape is None:
        return AutoModelForCausalLM.from_pretrained(base)
    if shape.vocab_size is not None and shape.vocab_size != vocabulary:
        raise ValueError(f"distill.student.vocabSize is {shape.vocab_size} but the teacher's tokenizer has "
                         f"{vocabulary} tokens: leave it unset (the student takes the teacher's vocabulary)")
    return to_huggingface(build_model(shape, vocabulary, eos_id))


def prepare(config: FineTuneRunConfig, tokenizer: Any, base: Path, teacher_dir: Path,
            device: torch.device) -> tuple[PreTrainedModel, Teacher]:
    """The student (on `device`) and the frozen teacher of a distillation run."""
    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    check_same_tokenizer(tokenizer, teacher_tokenizer, config)
    vocabulary = len(teacher_tokenizer)
    student = build_student(config, base, vocabulary, teacher_tokenizer.eos_token_id).to(device)
    return student, Teacher(load_teacher(teacher_dir, device), vocabulary)


def token_batch(texts: list[str], tokenizer: Any, max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded ids of each text + eos (cut to max_length), its attention mask, and labels (IGNORE at
    padding)."""
    examples = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        examples.append({"input_ids": ids[:max_length]})
    return pad(examples, tokenizer.pad_token_id)


def divergence_and_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean KL(teacher_T || student_T) and mean next-token cross-entropy over the positions whose next token is
    real. Logits: (batch, length, vocabulary), already cut to the shared vocabulary."""
    student_logits, teacher_logits = student_logits[:, :-1].float(), teacher_logits[:, :-1].float()
    targets = labels[:, 1:]
    real = targets != IGNORE
    per_token_kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                            F.log_softmax(teacher_logits / temperature, dim=-1),
                            log_target=True, reduction="none").sum(-1)
    per_token_ce = F.cross_entropy(student_logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    count = real.sum().clamp(min=1)  # a batch of one-token texts predicts nothing: 0, not NaN
    return (per_token_kl * real).sum() / count, per_token_ce.sum() / count


def both_logits(student: Any, teacher: Teacher, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        teacher_logits = teacher.model(**inputs).logits[..., :teacher.vocabulary]
    return student(**inputs).logits[..., :teacher.vocabulary], teacher_logits


def distill_loss(student: Any, teacher: Teacher, records: list[dict[str, Any]], tokenizer: Any,
                 config: FineTuneRunConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The distillation loss of `student` (the model or its DDP wrapper) on records, with `kl` (at the
    temperature) and `crossEntropy` reported."""
    settings, device = config.distill, next(teacher.model.parameters()).device
    batch = token_batch([record_text(r, config) for r in records], tokenizer, config.data.max_length)
    batch = {k: v.to(device) for k, v in batch.items()}
    kl, cross_entropy = divergence_and_cross_entropy(*both_logits(student, teacher, batch), batch["labels"],
                                                     settings.temperature)
    weight = settings.cross_entropy_weight
    loss = (1 - weight) * settings.temperature ** 2 * kl + weight * cross_entropy
    return loss, {"kl": kl.item(), "crossEntropy": cross_entropy.item()}


@torch.no_grad()
def kl_and_cross_entropy(student: Any, teacher: Teacher, texts: list[str], tokenizer: Any, max_length: int,
                         batch_size: int = 8) -> tuple[float, float]:
    """Over `texts`, per predicted token at temperature 1: the mean KL(teacher || student), how far the student's
    next-token distributions are from the teacher's (0: the same), and the student's mean cross-entropy."""
    device = next(teacher.model.parameters()).device
    kl_sum, cross_entropy_sum, tokens = 0.0, 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = token_batch(texts[start:start + batch_size], tokenizer, max_length)
        batch = {k: v.to(device) for k, v in batch.items()}
        kl, cross_entropy = divergence_and_cross_entropy(*both_logits(student, teacher, batch), batch["labels"], 1.0)
        count = int((batch["labels"][:, 1:] != IGNORE).sum())
        kl_sum, cross_entropy_sum = kl_sum + kl.item() * count, cross_entropy_sum + cross_entropy.item() * count
        tokens += count
    return kl_sum / tokens, cross_entropy_sum / tokens
