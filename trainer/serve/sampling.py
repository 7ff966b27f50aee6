"""Choosing the next token: greedy for temperature 0, else temperature + nucleus (top-p) sampling.

Each sequence samples with its own torch.Generator, so a seeded request draws the same tokens whatever
else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks fix the output length with it)."""
    logprobs: int | None = None
    """Report each generated token's log-probability with this many most likely alternatives; None: not."""
    prompt_logprobs: int | None = None
    """Score the prompt too (every token given those before it), with this many alternatives; None: not.
    With max_tokens 0 the prompt is only scored: nothing is generated and no cache slot is taken."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def generator_for(seed: int | None, index: int) -> torch.Generator:
    """The random stream of choice `index` of a request; choices of one seeded request differ from each other."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed((seed * 1_000_003 + index) % (1 << 63))
    return generator


def top_p_probabilities(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Softmax of logits/temperature restricted to the smallest set of tokens whose mass reaches top_p."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(descending=True)
    # Keep a token if the mass before it is still short of top_p (so the most likely token always stays).
    keep = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
    sorted_probs = sorted_probs * keep
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs / sorted_probs.sum())


def choose(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """Next token of each row of `logits` [B, vocab]."""
    chosen = logits.argmax(dim=-1).tolist()  # one argmax and one copy out for the batch
    if all(p.greedy for p in params):
        return chosen
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if not p.greedy:
            probs = top_p_probabilities(logits[row].cpu(), p.temperature, p.top_p)
            chosen[row] = int(torch.multinomial(probs, 1, generator=generator))
    return chosen
