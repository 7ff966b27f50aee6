"""The legacy completions `logprobs` object: tokens, their log-probabilities, alternatives and text offsets.

OpenAI's legacy API and vLLM answer `echo`/`logprobs` with four parallel lists: `tokens` (each token's text),
`token_logprobs` (null for the first prompt token, which nothing predicts), `top_logprobs` (token text ->
log-probability for the chosen token and the most likely alternatives) and `text_offset` (where each token
starts in the returned text). Clients that do not know the server's tokenizer split a prompt into context and
continuation with `text_offset`, so the offsets here are exact: each token's text is what it adds to the
decoded text in context (a token that completes no character adds "", the one that completes it adds the
whole character), so the texts join to the decoded text and each offset is the length of the text before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .runner import TokenScore

FLOOR = -9999.0
"""Stand-in for -inf, which JSON cannot carry (vLLM uses the same)."""


def decoder(tokenizer: Any, skip_special_tokens: bool) -> Callable[[list[int]], str]:
    """ids -> text without the clean-up of spaces some tokenizers apply, so pieces add up to the whole."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=skip_special_tokens)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens,
                                        clean_up_tokenization_spaces=False)


def token_texts(decode: Callable[[list[int]], str], ids: Sequence[int]) -> list[str]:
    """The text each token adds in context. Decodes a short window per token (as the streaming detokenizer
    does), so a long prompt costs linear time, not quadratic."""
    ids = list(ids)
    pieces: list[str] = []
    prefix = read = 0
    for end in range(1, len(ids) + 1):
        before, after = decode(ids[prefix:read]), decode(ids[prefix:end])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            pieces.append(after[len(before):])
            prefix, read = read, end
        else:
            pieces.append("")  # completes no character yet: the token that does carries it
    if read < len(ids):  # ends inside a character: the last token carries what decoding makes of it
        pieces[-1] = decode(ids[prefix:])[len(decode(ids[prefix:read])):]
    return pieces


def completion_logprobs(decode: Callable[[list[int]], str], ids: Sequence[int],
                        scores: Sequence[TokenScore | None], offset: int = 0) -> dict[str, list[Any]]:
    """The `logprobs` object for `ids` with their `scores`; the first token starts at `offset` of the text."""
    texts = token_texts(decode, ids)
    out: dict[str, list[Any]] = {"tokens": texts, "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, text, score in zip(ids, texts, scores, strict=True):
        out["text_offset"].append(offset)
        offset += len(text)
        if score is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(max(score.logprob, FLOOR))
        # The chosen token always, under the same text as in `tokens`, then the alternatives (as OpenAI: up to
        # logprobs + 1 entries). Alternatives are named by their text alone, out of context.
        top = {text: max(score.logprob, FLOOR)}
        for alternative, logprob in score.top:
            if alternative != token:
                top.setdefault(decode([alternative]), max(logprob, FLOOR))
        out["top_logprobs"].append(top)
    return out
