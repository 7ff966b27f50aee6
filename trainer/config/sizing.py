"""Compute-optimal sizing: the model shape and token count a FLOP budget buys (Chinchilla, Hoffmann et al. 2022).

Training costs about C = 6 N D FLOPs for N parameters and D tokens, and for a fixed C the loss is lowest near
D = k N with k about 20 tokens per parameter. So N = sqrt(C / (6 k)) and D = C / (6 N). A real shape only
approximates N: we search Llama shapes (width a multiple of 64 with 64-wide heads, 1 to 128 layers, width per
layer between 32 and 128 as in the Chinchilla and Kaplan model tables) for the parameter count nearest N in
log scale, preferring width/layers near 64 on ties, then spend the whole budget on that shape.
"""

from __future__ import annotations

import math

from .base import StatusModel
from .model import ModelConfig
from .training import ComputeBudget

HEAD_DIM = 64
ASPECT_RANGE = (32, 128)
"""Width per layer the search allows; outside it, the same parameters train worse (Kaplan et al. 2020, fig. 5)."""
PREFERRED_ASPECT = 64


class BudgetSizing(StatusModel):
    """What a computeBudget bought: the shape (when chosen), its parameters, the tokens and the steps."""

    hidden_size: int
    """Width of the model trained."""

    num_layers: int
    """Blocks of the model trained."""

    num_heads: int
    """Attention heads of the model trained."""

    parameters: int
    """Parameters of that shape (embeddings included), N in C = 6ND."""

    tokens: int
    """Training tokens the budget pays for, D = C / (6N) rounded to whole steps."""

    steps: int
    """Optimizer steps: tokens / tokens per step."""

    tokens_per_parameter: float
    """D / N as trained (about 20 is compute-optimal)."""

    chosen: bool = False
    """True when the shape was chosen from the budget (computeBudget.chooseShape), false when given."""

    epochs: float | None = None
    """Passes over the Dataset's training tokens; above 1 the data repeats (known once the Dataset ran)."""


def optimal_parameters(budget: ComputeBudget) -> float:
    """N with C = 6 N D and D = tokensPerParameter x N."""
    return math.sqrt(budget.flops / (6 * budget.tokens_per_parameter))


def candidate_shapes(template: ModelConfig) -> list[ModelConfig]:
    """Every shape the search considers: the template's other fields (context, vocabulary, norms) kept."""
    shapes = []
    for layers in range(1, 129):
        low, high = ASPECT_RANGE[0] * layers, ASPECT_RANGE[1] * layers
        for width in range(HEAD_DIM * max(1, math.ceil(low / HEAD_DIM)), min(high, 16384) + 1, HEAD_DIM):
            shapes.append(template.model_copy(update={"hidden_size": width, "num_layers": layers,
                                                      "num_heads": width // HEAD_DIM, "kv_heads": None,
                                                      "intermediate_size": None}))
    return shapes


def choose_shape(budget: ComputeBudget, template: ModelConfig, vocab_size: int) -> ModelConfig:
    """The candidate shape whose parameter count is nearest the compute-optimal N."""
    target = optimal_parameters(budget)

    def distance(shape: ModelConfig) -> tuple[float, float]:
        aspect = shape.hidden_size / shape.num_layers
        return (round(abs(math.log(shape.parameter_count(vocab_size) / target)), 2),
                abs(math.log(aspect / PREFERRED_ASPECT)))

    return min(candidate_shapes(template), key=distance)


def size_run(budget: ComputeBudget, model: ModelConfig, vocab_size: int, tokens_per_step: int,
             dataset_tokens: int | None = None) -> tuple[ModelConfig, BudgetSizing]:
    """The model to train (chosen when budget.chooseShape, else `model`) and what the budget buys with it."""
    shape = choose_shape(budget, model, vocab_size) if budget.choose_shape else model
    parameters = shape.parameter_count(vocab_size)
    steps = max(1, int(budget.flops / (6 * parameters * tokens_per_step)))
    tokens = steps * tokens_per_step
    return shape, BudgetSizing(
        hidden_size=shape.hidden_size, num_layers=shape.num_layers, num_heads=shape.num_heads,
        parameters=parameters, tokens=tokens, steps=steps, tokens_per_parameter=round(tokens / parameters, 2),
        chosen=budget.choose_shape,
        epochs=round(tokens / dataset_tokens, 2) if dataset_tokens else None)
