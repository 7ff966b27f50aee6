"""Scoring with a causal LM: rolling log-likelihood (perplexity, bits per byte) and choice log-likelihoods.

Conventions follow lm-evaluation-harness: a document is scored after an end-of-text token, long documents
with a sliding window so every token is predicted with up to a context length of history; acc picks the
choice with the highest log-likelihood, acc_norm divides it by the choice's length in characters (without
the space that joins it to the prompt).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import torch


@torch.no_grad()
def rolling_loglikelihood(model: torch.nn.Module, ids: list[int], prefix: int, context: int,
                          stride: int) -> tuple[float, int]:
    """(sum of log p over every token of `ids`, number of tokens), each token scored exactly once.

    The first window predicts up to `context` tokens; each later one predicts the next `stride` tokens from a
    window that ends at the last of them and reaches back as far as the context allows. With stride equal to
    the context this is lm-evaluation-harness's rolling log-likelihood (its last window is right-aligned too).
    """
    tokens = [prefix, *ids]
    total, done = 0.0, 0  # `done`: index of the last token already scored (tokens[0] is the prefix)
    while done < len(tokens) - 1:
        end = min(len(tokens) - 1, context if done == 0 else done + stride)
        start = max(0, end - context)
        window = torch.tensor([tokens[start:end + 1]])
        logits = model(input_ids=window[:, :-1]).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, window[0, 1:, None])[:, 0]
        total += logprobs[-(end - done):].sum().item()
        done = end
    return total, len(tokens) - 1


@torch.no_grad()
def continuation_loglikelihoods(model: torch.nn.Module, context_ids: list[int],
                                continuations: list[list[int]]) -> list[float]:
    """log p(continuation | context) for each continuation, in one padded batch."""
    rows = [context_ids + c for c in continuations]
    width = max(len(r) for r in rows)
    batch = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    logprobs = torch.log_softmax(model(input_ids=batch, attention_mask=mask).logits.float(), dim=-1)
    out = []
    for i, cont in enumerate(continuations):
        start = len(context_ids)
        positions = torch.arange(start - 1, start - 1 + len(cont))
        out.append(logprobs[i, positions, torch.tensor(cont)].sum().item())
    return out


def perplexity(loglikelihood: float, tokens: int) -> float:
    return math.exp(-loglikelihood / tokens)


def bits_per_byte(loglikelihood: float, n_bytes: int) -> float:
    return -loglikelihood / (math.log(2) * n_bytes)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold:
        return float(pred == gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)
