"""Structured pruning (FineTune method prune): measure importance on calibration text with forward hooks, keep the
most important decoder layers (depth) or MLP channels (width), and write the smaller Llama-style model, meant to be
distilled next (Minitron's prune-then-distill).

depth: block influence of a layer = 1 - mean cosine similarity of its input and output hidden states over every
calibration token (ShortGPT); a layer that barely turns the residual stream is the cheapest to drop.
width: importance of an MLP channel = mean |activation| of its input to down_proj, act(gate) * up (Minitron's
activation-based importance); a channel that is rarely active contributes little to any output.

The pruned model is rebuilt from its smaller config and loaded with a strict state dict, so a weight the new shape
does not account for fails here rather than in whoever loads the model next.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from llmops.trainer.config.base import WireModel
from llmops.trainer.config.finetune import PruneAxis, PruneConfig
from llmops.trainer.train.export import save_tokenizer

PER_LAYER_CONFIG_LISTS = ("layer_types", "no_rope_layers")
"""Config entries that hold one value per decoder layer (transformers' hybrid-attention and NoPE models): depth
pruning keeps the kept layers' entries, in order."""
KEPT_CHANNELS_FILE = "pruned-channels.json"
"""Width pruning writes which original MLP channels each layer kept here (too long for the model card)."""
SCORE_DIGITS = 4

LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.")
MLP_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$")


class PruneSummary(WireModel):
    """What prune reports (into the model card and the result channel)."""

    axis: PruneAxis
    parameters_before: int
    """Parameters of the base model."""
    parameters: int
    """Parameters of the pruned model."""
    kept: list[int] | int
    """depth: the original indices of the layers kept, in order. width: the MLP channels kept in each layer (which
    ones: pruned-channels.json)."""
    importance: list[float] | None = None
    """depth: block influence of every original layer."""
    importance_kept: list[float] | None = None
    """width: per layer, the share of its total channel importance that the kept channels hold."""
    calibration_tokens: int
    """Tokens the importance was measured over."""


def prune(base_dir: Path, config: PruneConfig, texts: list[str], out_dir: Path) -> dict[str, Any]:
    """Prune the model in `base_dir` to `config`'s target by importance measured on `texts`; write the smaller model
    (weights, config, tokenizer, generation config) to `out_dir`, which must not exist yet. Returns the summary."""
    base_config = AutoConfig.from_pretrained(base_dir)
    target = checked_target(config, base_config)
    if not texts:
        raise ValueError("prune needs calibration text, and the data has no usable records "
                         "(prune.calibrationExamples reads the first records' text)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # fp32 whatever the stored dtype: cosine similarities near 1 and small activations need the precision.
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    sequences = token_sequences(tokenizer, texts, base_config.max_position_embeddings)
    if not sequences:
        raise ValueError(f"prune's {len(texts)} calibration texts tokenize to no tokens")

    if config.axis is PruneAxis.DEPTH:
        influence = block_influence(model, sequences)
        kept_layers = most_important(influence, target)
        pruned = drop_layers(model, kept_layers)
        summary = PruneSummary(axis=config.axis, parameters_before=parameter_count(model),
                               parameters=parameter_count(pruned), kept=kept_layers,
                               importance=[round(score, SCORE_DIGITS) for score in influence],
                               calibration_tokens=token_count(sequences))
    else:
        importance = channel_importance(model, sequences)
        kept_channels = [most_important(scores.tolist(), target) for scores in importance]
        pruned = narrow_mlp(model, kept_channels)
        summary = PruneSummary(axis=config.axis, parameters_before=parameter_count(model),
                               parameters=parameter_count(pruned), kept=target,
                               importance_kept=[round(share_kept(scores, kept), SCORE_DIGITS)
                                                for scores, kept in zip(importance, kept_channels, strict=True)],
                               calibration_tokens=token_count(sequences))
    pruned.generation_config = copy.deepcopy(model.generation_config)
    write_model_dir(pruned, tokenizer, out_dir, stored_dtype(base_config))
    if config.axis is PruneAxis.WIDTH:
        (out_dir / KEPT_CHANNELS_FILE).write_text(json.dumps({"keptChannels": kept_channels}))
    return summary.to_wire()


def checked_target(config: PruneConfig, model_config: PretrainedConfig) -> int:
    """The number of layers or channels to keep; ValueError naming the field unless it makes the model smaller."""
    if config.axis is PruneAxis.DEPTH:
        target, current, field, what = (config.num_layers, model_config.num_hidden_layers, "prune.numLayers",
                                        "number of layers")
    else:
        target, current, field, what = (config.intermediate_size, model_config.intermediate_size,
                                        "prune.intermediateSize", "MLP width (intermediate_size)")
    if target is None:
        raise ValueError(f"axis {config.axis.value} needs {field}: what the model is pruned to")
    if not 1 <= target < current:
        raise ValueError(f"{field} must be at least 1 and smaller than the model's {what}, {current}; got {target}")
    return target


def token_sequences(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[torch.Tensor]:
    """One (1, length) id tensor per non-empty text, cut to the model's context. One text per forward pass:
    unpadded, so every position the hooks see is a real token."""
    sequences = [torch.tensor([tokenizer(text, truncation=True, max_length=max_length)["input_ids"]])
                 for text in texts]
    return [ids for ids in sequences if ids.numel()]


def token_count(sequences: Sequence[torch.Tensor]) -> int:
    return sum(ids.numel() for ids in sequences)


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder blocks of a Llama-style causal LM; ValueError for a model laid out otherwise."""
    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(
            hasattr(getattr(layer, "mlp", None), name) for layer in layers
            for name in ("gate_proj", "up_proj", "down_proj")):
        raise ValueError(f"prune supports Llama-style models (model.layers[i].mlp.gate_proj/up_proj/down_proj), "
                         f"not {type(model).__name__}")
    return layers


@contextmanager
def hooked(handles: list[RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_calibration(model: PreTrainedModel, sequences: Sequence[torch.Tensor]) -> None:
    """Forward every sequence through the decoder stack (no lm_head: the hooks only watch the layers)."""
    decoder = model.get_decoder()
    with torch.no_grad():
        for ids in sequences:
            decoder(input_ids=ids.to(model.device), use_cache=False)


def block_influence(model: PreTrainedModel, sequences: Sequence[torch.Tensor]) -> list[float]:
    """Per decoder layer, 1 - the mean over calibration tokens of cos(layer input, layer output)."""
    layers = decoder_layers(model)
    similarity = torch.zeros(len(layers), dtype=torch.float64)

    def measure(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output  # older transformers return a tuple
            cosine = F.cosine_similarity(hidden_in.double(), hidden_out.double(), dim=-1)
            similarity[index] += cosine.sum().cpu()
        return hook

    with hooked([layer.register_forward_hook(measure(i), with_kwargs=True) for i, layer in enumerate(layers)]):
        run_calibration(model, sequences)
    # 1 - cos is never negative; clamping removes rounding noise from a layer that is an exact identity.
    return [max(0.0, 1.0 - total / token_count(sequences)) for total in similarity.tolist()]


def channel_importance(model: PreTrainedModel, sequences: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per decoder layer, the mean over calibration tokens of |act(gate) * up| for every MLP channel."""
    down_projections = [layer.mlp.down_proj for layer in decoder_layers(model)]
    totals = [torch.zeros(down.in_features, dtype=torch.float64) for down in down_projections]

    def measure(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            activation = args[0]
            totals[index] += activation.reshape(-1, activation.shape[-1]).abs().sum(dim=0).double().cpu()
        return hook

    with hooked([down.register_forward_pre_hook(measure(i)) for i, down in enumerate(down_projections)]):
        run_calibration(model, sequences)
    return [total / token_count(sequences) for total in totals]


def most_important(scores: Sequence[float], count: int) -> list[int]:
    """Indices of the `count` highest scores, in their original order; an equal score keeps the earlier index."""
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    return sorted(ranked[:count])


def share_kept(scores: torch.Tensor, kept: Sequence[int]) -> float:
    total = float(scores.sum())
    return float(scores[list(kept)].sum()) / total if total else 1.0


def drop_layers(model: PreTrainedModel, kept: Sequence[int]) -> PreTrainedModel:
    """A copy of `model` with only the decoder layers `kept` (original indices, ascending), renumbered 0..n-1."""
    config = copy.deepcopy(model.config)
    for name in PER_LAYER_CONFIG_LISTS:
        values = getattr(config, name, None)
        if isinstance(values, list) and len(values) == config.num_hidden_layers:
            setattr(config, name, [values[i] for i in kept])
    config.num_hidden_layers = len(kept)
    new_index = {old: new for new, old in enumerate(kept)}
    state = {}
    for key, tensor in model.state_dict().items():
        match = LAYER_KEY.match(key)
        if match is None:
            state[key] = tensor
        elif int(match.group(1)) in new_index:
            state[LAYER_KEY.sub(f"model.layers.{new_index[int(match.group(1))]}.", key)] = tensor
    return model_from(config, state)


def narrow_mlp(model: PreTrainedModel, kept: Sequence[Sequence[int]]) -> PreTrainedModel:
    """A copy of `model` whose layer i keeps only MLP channels `kept[i]`: those rows of gate_proj and up_proj and
    columns of down_proj. Every layer keeps the same number (a Llama config has one intermediate_size)."""
    widths = {len(channels) for channels in kept}
    if len(widths) != 1 or len(kept) != model.config.num_hidden_layers:
        raise ValueError(f"narrow_mlp needs one channel list per layer, all of one length; got lengths "
                         f"{[len(channels) for channels in kept]} for {model.config.num_hidden_layers} layers")
    config = copy.deepcopy(model.config)
    config.intermediate_size = widths.pop()
    state = {}
    for key, tensor in model.state_dict().items():
        match = MLP_KEY.match(key)
        if match is not None:
            layer, projection, kind = int(match.group(1)), match.group(2), match.group(3)
            channels = torch.tensor(list(kept[layer]), device=tensor.device)
            if projection != "down_proj":
                tensor = tensor.index_select(0, channels)
            elif kind == "weight":  # down_proj's bias is per output (hidden) feature: unchanged
                tensor = tensor.index_select(1, channels)
        state[key] = tensor
    return model_from(config, state)


def model_from(config: PretrainedConfig, state: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A new fp32 model of `config` holding exactly `state` (strict: a missing or misshapen weight raises)."""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    return model.eval()


def parameter_count(model: PreTrainedModel) -> int:
    return sum(parameter.numel() for parameter in model.parameters())  # a tied embedding counts once


def stored_dtype(config: PretrainedConfig) -> torch.dtype:
    """The dtype the base model's weights were saved in (fp32 if its config does not say), so a bf16 base gives a
    bf16 pruned model rather than one twice the size."""
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def write_model_dir(model: PreTrainedModel, tokenizer: Any, out_dir: Path, dtype: torch.dtype) -> None:
    model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tokenizer, out_dir)
