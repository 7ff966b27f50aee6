"""How scoring requests are laid out for the model: pure decisions on token lists, no model.

- `encode_pairs` splits (context, continuation) requests into tokens by lm-evaluation-harness's rule, so our
  log-likelihoods are of the same tokens as its.
- `choice_rows` puts every continuation of one context (a question's choices) into one sequence: the context
  once, then each continuation without its last token (whose prediction nothing reads). The scorer runs it
  under a mask where each continuation sees the context and itself only, so the context is computed once for
  all choices and the numbers are those of scoring each request on its own.
- `pack` sorts sequences longest first and cuts them into batches whose padded size fits a token budget
  (lm-eval sorts the same way and batches a fixed count); callers put results back in request order.
- `rolling_windows` are the windows of a document's rolling log-likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_TOKEN_BUDGET = 2048
"""Tokens (rows × padded length) per forward pass: large enough for efficient matmuls on a CPU, small enough
that the logits of a large vocabulary fit in memory."""


def boundary_texts(context: str, continuation: str) -> tuple[str, str]:
    """(context text, whole text) that lm-eval's HF model tokenizes for a request with a non-empty context:
    trailing spaces of the context move to the continuation."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    return context, context + continuation


def encode_pairs(encode: Callable[[list[str]], list[list[int]]], requests: list[tuple[str, str]],
                 prefix: int) -> list[tuple[list[int], list[int]]]:
    """(context tokens, continuation tokens) per (context, continuation), split as lm-eval's HF model splits
    them: the whole text is tokenized and the continuation is its tokens past the context's own token count (a
    token that merges across the boundary is then in neither part). An empty context is the `prefix` token
    (lm-eval: BOS, else EOS), or the continuation's first token when that is the prefix. `encode` tokenizes a
    list of texts; each distinct text is tokenized once (a question's context serves all its choices)."""
    texts = [t for context, continuation in requests
             for t in (boundary_texts(context, continuation) if context else (continuation,))]
    unique = list(dict.fromkeys(texts))
    ids = dict(zip(unique, encode(unique), strict=True)) if unique else {}
    pairs = []
    for context, continuation in requests:
        if not context:
            tokens = ids[continuation]
            pairs.append((tokens[:1], tokens[1:]) if tokens and tokens[0] == prefix else ([prefix], tokens))
            continue
        context_text, whole = boundary_texts(context, continuation)
        pairs.append((ids[context_text], ids[whole][len(ids[context_text]):]))
    return pairs


@dataclass(frozen=True)
class RowLayout:
    """What the model is fed for a ChoiceRow, and which of its predictions count."""

    ids: list[int]
    positions: list[int]
    """Each token's position: a continuation's tokens sit right after the context, as if it were alone."""
    segments: list[int]
    """0 for the context, k for the k-th continuation: a token attends to the context and its own segment."""
    scored: list[tuple[int, int, int]]
    """(request index, index of the token whose prediction counts, target token) per continuation token."""


@dataclass(frozen=True)
class ChoiceRow:
    """A context and the continuations scored after it, as one sequence of a batch."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, tuple[int, ...]], ...]
    """(request index, tokens) for each continuation, in request order."""

    @property
    def length(self) -> int:
        """Tokens fed to the model: the context, then each continuation less its last token."""
        return len(self.context) + sum(len(tokens) - 1 for _, tokens in self.continuations)

    def layout(self) -> RowLayout:
        n = len(self.context)
        ids, positions, segments = list(self.context), list(range(n)), [0] * n
        scored = []
        for segment, (request, tokens) in enumerate(self.continuations, start=1):
            at = len(ids)
            ids += tokens[:-1]
            positions += range(n, n + len(tokens) - 1)
            segments += [segment] * (len(tokens) - 1)
            # The context's last token predicts the first token, each continuation token the one after it.
            scored += [(request, n - 1 if k == 0 else at + k - 1, token) for k, token in enumerate(tokens)]
        return RowLayout(ids, positions, segments, scored)


def choice_rows(pairs: list[tuple[list[int], list[int]]], max_length: int) -> list[ChoiceRow]:
    """One row per distinct context, holding all its continuations, first-seen order. As lm-eval does, a request
    longer than the model's `max_length` + 1 keeps its last tokens (its context loses its first ones), so such a
    request shares its row only with others cut the same. Requests with an empty continuation score 0 and are
    left out."""
    groups: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
    for index, (context, continuation) in enumerate(pairs):
        if not continuation:
            continue
        if len(continuation) > max_length:
            raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the model's context of "
                             f"{max_length}")
        if not context:
            raise ValueError("a request's context has no tokens (a whitespace-only context?)")
        kept = (context + continuation)[-(max_length + 1):]
        groups.setdefault(tuple(kept[:len(kept) - len(continuation)]), []).append((index, tuple(continuation)))
    return [ChoiceRow(context, tuple(continuations)) for context, continuations in groups.items()]


def pack(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into consecutive batches whose rows × longest row stays within
    `budget` (a row longer than the budget is a batch of its own). Sorting keeps padding small."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


@dataclass(frozen=True)
class Window:
    """Of the tokens [prefix, t0, ..., t(n-1)]: the model reads tokens[start:end] and the last `scored` of its
    predictions (of tokens[end - scored + 1 : end + 1]) count."""

    start: int
    end: int
    scored: int


def rolling_windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """Windows scoring each of a document's n tokens exactly once: the first predicts up to `context` tokens,
    each later one the next `stride` from a window that ends at the last of them and reaches back as far as the
    context allows. With stride equal to the context this is lm-eval's rolling log-likelihood (its last window
    is right-aligned too)."""
    windows, done = [], 0  # `done`: tokens scored so far
    while done < n_tokens:
        end = min(n_tokens, context if done == 0 else done + stride)
        windows.append(Window(max(0, end - context), end, end - done))
        done = end
    return windows
