"""A reward model as the judge of winRate tasks: which of two answers to a prompt it rewards more.

The judge is what `llmops-finetune` exports for method reward (or TRL's RewardTrainer): a sequence-classification
model with one label. It scores `prompt + "\\n" + answer` exactly as it was trained to (trainer/train/reward.py),
where the prompt is the row's own question, not the "Question: ...\\nAnswer:" wrapper the generations are
prompted with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from llmops.trainer import storage
from llmops.trainer.config import layout
from llmops.trainer.model_files import ModelLoadError, check_model_dir, context_length
from llmops.trainer.train.reward import score

DEFAULT_MAX_LENGTH = 512
"""Longest scored text, in tokens, for a model whose config names no context length."""


@dataclass
class RewardJudge:
    model: Any
    tokenizer: Any
    uri: str
    """Where the judge came from (results.json names it)."""
    max_length: int

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return score(self.model, self.tokenizer, prompts, responses, self.max_length)

    def win_rate(self, prompts: Sequence[str], ours: Sequence[str], theirs: Sequence[str]) -> float:
        """Share of prompts where our answer is rewarded more than theirs; a tie counts half."""
        return win_rate(self.rewards(prompts, ours), self.rewards(prompts, theirs), ours, theirs)


def win_rate(our_rewards: Sequence[float], their_rewards: Sequence[float], ours: Sequence[str],
             theirs: Sequence[str]) -> float:
    """1 per win, 0.5 per tie, averaged. The same answer is a tie whatever its two rewards (they can differ in
    the last bits when it was scored in batches of different padded lengths)."""
    wins = 0.0
    for mine, other, a, b in zip(our_rewards, their_rewards, ours, theirs, strict=True):
        wins += 0.5 if a == b or mine == other else float(mine > other)
    return wins / len(ours)


def load_judge(uri: str) -> RewardJudge:
    """Stage the reward model at `uri` and load it; ModelLoadError unless it is a one-label classifier."""
    path = storage.stage_in(uri, "judge model", require=layout.MODEL_CONFIG_FILE)
    check_model_dir(path, uri)
    config = AutoConfig.from_pretrained(path)
    if not any("SequenceClassification" in a for a in config.architectures or []) or config.num_labels != 1:
        raise ModelLoadError(f"judge {uri} is not a reward model: expected a sequence-classification model with "
                             f"one label (llmops-finetune method reward), found {config.architectures} with "
                             f"{config.num_labels} labels")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    if model.config.pad_token_id is None:  # exported without one (batches need it to find the last token)
        model.config.pad_token_id = tokenizer.pad_token_id
    max_length = context_length(model.config, DEFAULT_MAX_LENGTH)
    return RewardJudge(model, tokenizer, uri, max_length)
