"""Scoring with a causal LM: rolling log-likelihood (perplexity, bits per byte) and choice log-likelihoods.

Conventions follow lm-evaluation-harness: a document is scored after an end-of-text token, long documents
with a sliding window so every token is predicted with up to a context length of history; acc picks the
choice with the highest log-likelihood, acc_norm divides it by the choice's length in characters (without
the space that joins it to the prompt). Requests are batched across documents and questions, a question's
context computed once for all its choices (batching.py lays them out); the results are those of scoring each
request alone.
"""

from __future__ import annotations

import inspect
import math
import re
import string
from collections import Counter

import torch

from . import batching


@torch.no_grad()
def rolling_loglikelihood(model: torch.nn.Module, ids: list[int], prefix: int, context: int,
                          stride: int) -> tuple[float, int]:
    """(sum of log p over every token of `ids`, number of tokens), each token scored exactly once: one forward
    pass per window of `batching.rolling_windows`. The straightforward path; `rolling_loglikelihoods` batches."""
    tokens, total = [prefix, *ids], 0.0
    for w in batching.rolling_windows(len(ids), context, stride):
        window = torch.tensor([tokens[w.start:w.end + 1]])
        logits = model(input_ids=window[:, :-1]).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, window[0, 1:, None])[:, 0]
        total += logprobs[-w.scored:].sum().item()
    return total, len(ids)


@torch.no_grad()
def rolling_loglikelihoods(model: torch.nn.Module, docs: list[list[int]], prefix: int, context: int, stride: int,
                           budget: int = batching.DEFAULT_TOKEN_BUDGET) -> list[tuple[float, int]]:
    """`rolling_loglikelihood` of each document, the windows of all documents packed into batches by length.

    Windows are padded on the right and run without a mask: a causal model's prediction at a position reads
    only the positions before it, so padding after a window cannot change the window's numbers."""
    windows = [(doc, [prefix, *ids][w.start:w.end + 1], w.scored)
               for doc, ids in enumerate(docs) for w in batching.rolling_windows(len(ids), context, stride)]
    totals = torch.zeros(len(docs), dtype=torch.float64)
    for batch in batching.pack([len(tokens) - 1 for _, tokens, _ in windows], budget):
        width = len(windows[batch[0]][1]) - 1
        inputs = _padded([windows[i][1][:-1] for i in batch], width, 0)
        rows, positions, targets, owners = [], [], [], []
        for row, i in enumerate(batch):
            doc, tokens, scored = windows[i]
            length = len(tokens) - 1
            rows += [row] * scored
            positions += range(length - scored, length)
            targets += tokens[length - scored + 1:]
            owners += [doc] * scored
        first = min(positions)
        logits = _logits(model, width - first, input_ids=inputs)
        totals.index_add_(0, torch.tensor(owners), _logprobs(logits, rows, positions, targets, first))
    return [(totals[doc].item(), len(ids)) for doc, ids in enumerate(docs)]


@torch.no_grad()
def loglikelihoods(model: torch.nn.Module, pairs: list[tuple[list[int], list[int]]], max_length: int,
                   budget: int = batching.DEFAULT_TOKEN_BUDGET) -> list[float]:
    """log p(continuation | context) per (context tokens, continuation tokens), in request order.

    The continuations of one context share a row (`batching.choice_rows`): the context once, then each
    continuation less its last token, each at the positions it would have right after the context, under a mask
    where it sees the context and its own earlier tokens only. Rows are packed into batches by length."""
    rows = batching.choice_rows(pairs, max_length)
    out = torch.zeros(len(pairs), dtype=torch.float64)
    for batch in batching.pack([row.length for row in rows], budget):
        layouts = [rows[i].layout() for i in batch]
        width = max(len(layout.ids) for layout in layouts)
        scored = [(row, *s) for row, layout in enumerate(layouts) for s in layout.scored]
        rows_at, owners, positions, targets = (list(column) for column in zip(*scored, strict=True))
        first = min(positions)
        segments = _padded([layout.segments for layout in layouts], width, -1)
        logits = _logits(model, width - first, input_ids=_padded([layout.ids for layout in layouts], width, 0),
                         position_ids=_padded([layout.positions for layout in layouts], width, 0),
                         attention_mask=_choice_mask(segments, model.dtype))
        out.index_add_(0, torch.tensor(owners), _logprobs(logits, rows_at, positions, targets, first))
    return out.tolist()


def _padded(rows: list[list[int]], width: int, fill: int) -> torch.Tensor:
    return torch.tensor([row + [fill] * (width - len(row)) for row in rows])


def _choice_mask(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask [batch, 1, query, key] for rows of `segments` (-1 padding): a token sees earlier
    tokens of the context and of its own segment. Padding sees only itself (a query that sees nothing would
    give NaN); nothing sees padding."""
    query, key = segments[:, :, None], segments[:, None, :]
    n = segments.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    allowed = causal & (key != -1) & ((key == 0) | (key == query))
    allowed |= torch.eye(n, dtype=torch.bool)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def _logits(model: torch.nn.Module, keep: int, **inputs: torch.Tensor) -> torch.Tensor:
    """Logits of the last `keep` positions; the ones before are context whose predictions nothing reads, and a
    model that takes `logits_to_keep` (transformers' causal LMs) skips their output projection."""
    if _takes_logits_to_keep(model):
        return model(**inputs, logits_to_keep=keep).logits
    return model(**inputs).logits[:, -keep:]


def _takes_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _logprobs(logits: torch.Tensor, rows: list[int], positions: list[int], targets: list[int],
              first: int) -> torch.Tensor:
    """log p(target) predicted at each (row, position), where `logits` starts at position `first`; the softmax
    is taken only where a prediction counts."""
    selected = logits[torch.tensor(rows), torch.tensor(positions) - first].float()
    return torch.log_softmax(selected, dim=-1).gather(1, torch.tensor(targets)[:, None])[:, 0].double()


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
