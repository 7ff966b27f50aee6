"""Reward model: the Bradley-Terry loss of a one-label sequence-classification model on preference pairs.

A pair is scored as two texts, `prompt + "\\n" + chosen` and `prompt + "\\n" + rejected` (`reward_text`); the
judge (trainer/evaluate/judge.py) scores with the same layout through `score`, so a reward means the same at
training and at judging time. The model pools the hidden state of the rightmost token that is not the pad
token (transformers' sequence-classification pooling), so texts are padded on the right with the pad id the
model's config names and carry no special tokens that could equal it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from llmops.trainer.config.finetune import FineTuneRunConfig


def reward_text(prompt: str, response: str) -> str:
    """The text a reward scores: the layout of training and of judging alike."""
    return f"{prompt}\n{response}"


def check_pooling(model: Any, tokenizer: Any) -> None:
    """Refuse a model that would pool the wrong token: without a pad id it takes the last position even when
    it is padding; with another pad id than the tokenizer's it stops at the wrong one."""
    config = getattr(model, "module", model).config  # a DDP wrapper keeps the model in .module
    if tokenizer.pad_token_id is None or config.pad_token_id != tokenizer.pad_token_id:
        raise ValueError(f"reward model: its config's pad_token_id ({config.pad_token_id}) must be the "
                         f"tokenizer's pad token id ({tokenizer.pad_token_id}) to pool the last real token")


def rewards(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """One scalar reward per text, from one right-padded batch truncated to `max_length` tokens."""
    check_pooling(model, tokenizer)
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, add_special_tokens=False,
                      padding_side="right", return_tensors="pt", return_token_type_ids=False)
    device = next(model.parameters()).device
    return model(**batch.to(device)).logits[:, 0].float()


def reward_loss(model: Any, records: list[dict[str, Any]], tokenizer: Any,
                config: FineTuneRunConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """-log sigmoid(r_chosen - r_rejected), plus centerRewardsCoefficient * mean((r_chosen + r_rejected)^2)
    when set (TRL's centring term); extras: pairwise accuracy (share with r_chosen > r_rejected) and the mean
    margin of the batch."""
    fields = config.data.fields
    chosen = [reward_text(str(r[fields.prompt]), str(r[fields.chosen])) for r in records]
    rejected = [reward_text(str(r[fields.prompt]), str(r[fields.rejected])) for r in records]
    # Both halves in one forward pass: one DDP forward per backward, and one padded length for the pair.
    scores = rewards(model, tokenizer, chosen + rejected, config.data.max_length)
    r_chosen, r_rejected = scores[: len(records)], scores[len(records):]
    margin = r_chosen - r_rejected
    loss = -F.logsigmoid(margin).mean()
    coefficient = config.reward.center_rewards_coefficient
    if coefficient > 0:
        loss = loss + coefficient * ((r_chosen + r_rejected) ** 2).mean()
    # Named as TrainLine declares them (DPO reports its margin as rewardMargin too).
    return loss, {"accuracy": (margin > 0).float().mean().item(), "rewardMargin": margin.mean().item()}


@torch.no_grad()
def score(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], max_length: int,
          batch_size: int = 16) -> list[float]:
    """The reward of each response to its prompt, laid out as in training."""
    if len(prompts) != len(responses):
        raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
    texts = [reward_text(p, r) for p, r in zip(prompts, responses, strict=True)]
    out: list[float] = []
    for start in range(0, len(texts), batch_size):
        out += rewards(model, tokenizer, texts[start:start + batch_size], max_length).tolist()
    return out
