"""Post-training weight-only quantization (round to nearest, symmetric) written in the compressed-tensors format.

int8 ("int-quantized"): each Linear's weight becomes `weight` int8 [out, in] and `weight_scale` [out, 1], one
scale per output channel. int4 ("pack-quantized"): `weight_packed` int32 [out, ceil(in / 8)] (eight 4-bit values
per int32, offset by +8 to unsigned, the first value in the lowest bits), `weight_scale` [out, in / groupSize] and
`weight_shape` [2]. Dequantized, a weight is `q * scale`. This is what compressed-tensors writes for llm-compressor's
W8A16 and W4A16 presets, so transformers (with the compressed-tensors package) and vLLM load it; llmops-serve loads
it without that package (`llmops.trainer.compress.qlinear`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from llmops.trainer.config import layout
from llmops.trainer.config.finetune import QuantizeConfig, QuantScheme

__all__ = ["QUANTIZED_WEIGHTS_FILE", "QuantizedTensors", "WeightQuantization", "dequantize", "pack_int4",
           "quantization_config", "quantize", "quantize_weight", "read_weight_quantization", "unpack_int4"]

QUANTIZED_WEIGHTS_FILE = "model.safetensors"
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")
"""What the quantized model takes from its base besides config and weights: the tokenizer and generation defaults."""
INT4_PER_INT32 = 8
FORMATS = {QuantScheme.INT8: "int-quantized", QuantScheme.INT4: "pack-quantized"}
BITS = {QuantScheme.INT8: 8, QuantScheme.INT4: 4}


# --- The arithmetic ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedTensors:
    """One Linear's quantized weight: integer values [out, in] (int8, within the scheme's range) and the scales
    that dequantize them ([out, 1] per channel, [out, in / group] per group)."""

    values: torch.Tensor
    scale: torch.Tensor

    @property
    def group_size(self) -> int:
        return self.values.shape[1] // self.scale.shape[1]


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int | None = None) -> QuantizedTensors:
    """Symmetric round-to-nearest: scale = max |w| / (2^(bits-1) - 1) over each output channel (or each group of
    `group_size` inputs), q = round(w / scale). The range is kept symmetric (-127..127, -7..7) so that zero and
    each value's negation are exact. The scale keeps the weight's dtype, and q is computed against that stored
    scale, so `q * scale` is exactly what any loader dequantizes."""
    rows, columns = weight.shape
    group = group_size or columns
    if columns % group:
        raise ValueError(f"group size {group} does not divide the input width {columns}")
    qmax = 2 ** (bits - 1) - 1
    groups = weight.detach().float().reshape(rows, columns // group, group)
    largest = groups.abs().amax(dim=-1)
    scale = torch.where(largest > 0, largest / qmax, torch.ones_like(largest)).to(weight.dtype)
    values = torch.round(groups / scale.float()[..., None]).clamp(-qmax, qmax).to(torch.int8)
    return QuantizedTensors(values.reshape(rows, columns), scale)


def dequantize(quantized: QuantizedTensors, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    rows, columns = quantized.values.shape
    groups = quantized.values.reshape(rows, quantized.scale.shape[1], -1).to(dtype)
    return (groups * quantized.scale.to(dtype)[..., None]).reshape(rows, columns)


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """int8 values in -8..7, [out, in] -> int32 [out, ceil(in / 8)]: value + 8 in 4 bits, value j of each eight
    at bits 4j..4j+3; a row whose width is not a multiple of eight is padded with zeros (compressed-tensors')."""
    rows, columns = values.shape
    padded = torch.zeros(rows, -(-columns // INT4_PER_INT32) * INT4_PER_INT32, dtype=torch.int64)
    padded[:, :columns] = values.to(torch.int64) + 8
    shifts = torch.arange(INT4_PER_INT32, dtype=torch.int64) * 4
    words = (padded.reshape(rows, -1, INT4_PER_INT32) << shifts).sum(dim=-1)
    # Values above 2^31 wrap to negative int32, as the bit pattern requires.
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_int4(packed: torch.Tensor, columns: int) -> torch.Tensor:
    """The inverse of pack_int4: int32 [out, ceil(in / 8)] -> int8 values in -8..7, [out, columns]."""
    shifts = torch.arange(INT4_PER_INT32, dtype=torch.int32, device=packed.device) * 4
    nibbles = (packed[..., None] >> shifts) & 0xF
    return (nibbles.reshape(packed.shape[0], -1)[:, :columns] - 8).to(torch.int8)


# --- The on-disk format --------------------------------------------------------------------------------------

def quantization_config(config: QuantizeConfig, ignore: list[str]) -> dict[str, Any]:
    """config.json's `quantization_config`: one group targeting every Linear, weights only, static."""
    int4 = config.scheme is QuantScheme.INT4
    weights = {"num_bits": BITS[config.scheme], "type": "int", "symmetric": True, "dynamic": False,
               "strategy": "group" if int4 else "channel", "group_size": config.group_size if int4 else None,
               "actorder": None, "block_structure": None}
    fmt = FORMATS[config.scheme]
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                          "output_activations": None, "format": fmt}},
            "ignore": ignore, "kv_cache_scheme": None, "sparsity_config": {}}


class _WeightArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    num_bits: Literal[4, 8]
    type: Literal["int"] = "int"
    symmetric: Literal[True] = True
    strategy: Literal["channel", "group"]
    group_size: int | None = None
    dynamic: Literal[False] = False


class _Group(BaseModel):
    model_config = ConfigDict(extra="ignore")

    targets: list[Literal["Linear"]]
    weights: _WeightArgs
    input_activations: None = None
    """Weight-only: a scheme that also quantizes activations is not one this loader computes."""


class _QuantizationConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    quant_method: Literal["compressed-tensors"]
    format: Literal["int-quantized", "pack-quantized"]
    quantization_status: Literal["compressed"] = "compressed"
    config_groups: dict[str, _Group]
    ignore: list[str] = []


@dataclass(frozen=True)
class WeightQuantization:
    """What a loader needs from a compressed-tensors `quantization_config` this module can write."""

    bits: int
    group_size: int | None
    packed: bool
    ignore: frozenset[str]


def read_weight_quantization(config: dict[str, Any]) -> WeightQuantization | None:
    """The weight quantization of a model's config.json (as a dict), None when it has no compressed-tensors one;
    raises ValueError (pydantic's, naming the field) for compressed-tensors schemes other than weight-only
    symmetric int8/int4 of every Linear in one group."""
    raw = config.get("quantization_config")
    if not isinstance(raw, dict) or raw.get("quant_method") != "compressed-tensors":
        return None
    parsed = _QuantizationConfig.model_validate(raw)
    if len(parsed.config_groups) != 1:
        raise ValueError(f"quantization_config has {len(parsed.config_groups)} config_groups; one is supported")
    weights = next(iter(parsed.config_groups.values())).weights
    if (weights.strategy == "group") != (weights.group_size is not None):
        raise ValueError("quantization_config: strategy 'group' needs a group_size, strategy 'channel' none")
    if (parsed.format == "pack-quantized") != (weights.num_bits == 4):
        raise ValueError(f"quantization_config: {weights.num_bits}-bit weights in format {parsed.format} are not "
                         "what llmops writes (int8: int-quantized, int4: pack-quantized)")
    return WeightQuantization(weights.num_bits, weights.group_size, parsed.format == "pack-quantized",
                              frozenset(parsed.ignore))


# --- The transformation --------------------------------------------------------------------------------------

def quantize(base_dir: Path, config: QuantizeConfig, out_dir: Path) -> dict[str, Any]:
    """Quantize every Linear of the model in `base_dir` but those in `config.ignore`; write the complete model
    directory `out_dir` (created) and return the summary the model card shows."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    linears = _linears_to_quantize(model, config)
    group_size = config.group_size if config.scheme is QuantScheme.INT4 else None
    tensors = _full_precision_tensors(model, set(linears))
    for name, linear in linears.items():
        tensors |= _quantized_tensors(name, linear.weight, config.scheme, group_size)
    out_dir.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / QUANTIZED_WEIGHTS_FILE),
              metadata={"format": "pt"})
    model_config = json.loads((base_dir / layout.MODEL_CONFIG_FILE).read_text())
    kept = sorted(name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name not in linears)
    model_config["quantization_config"] = quantization_config(config, kept)
    (out_dir / layout.MODEL_CONFIG_FILE).write_text(json.dumps(model_config, indent=2, sort_keys=True) + "\n")
    for file in COPIED_FILES:
        if (base_dir / file).is_file():
            shutil.copy2(base_dir / file, out_dir / file)
    before, after = _weight_bytes(base_dir), _weight_bytes(out_dir)
    summary: dict[str, Any] = {"scheme": config.scheme.value, "format": FORMATS[config.scheme]}
    if group_size:
        summary["groupSize"] = group_size
    return summary | {"quantizedModules": len(linears), "fullPrecisionModules": kept,
                      "parameters": sum(p.numel() for p in model.parameters()), "sizeBeforeBytes": before,
                      "sizeAfterBytes": after, "sizeRatio": round(after / before, 3)}


def _linears_to_quantize(model: torch.nn.Module, config: QuantizeConfig) -> dict[str, torch.nn.Linear]:
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = sorted(set(config.ignore) - set(linears))
    if unknown:
        raise ValueError(f"quantize.ignore names {', '.join(unknown)}, not Linear modules of the model "
                         f"(they are e.g. {', '.join(list(linears)[:4])})")
    chosen = {name: m for name, m in linears.items() if name not in config.ignore}
    embeddings = model.get_input_embeddings().weight
    for name, linear in chosen.items():
        if linear.weight is embeddings:
            raise ValueError(f"{name} shares its weight with the input embeddings (tie_word_embeddings): "
                             f"keep it in quantize.ignore")
        if config.scheme is QuantScheme.INT4 and linear.in_features % config.group_size:
            raise ValueError(f"quantize.groupSize {config.group_size} does not divide the input width "
                             f"{linear.in_features} of {name}: choose a divisor of every quantized layer's input "
                             "width (or add the layer to quantize.ignore)")
    return chosen


def _full_precision_tensors(model: torch.nn.Module, quantized: set[str]) -> dict[str, torch.Tensor]:
    """Every saved tensor but the quantized weights; a tied output weight is left to the config, as
    save_pretrained does (safetensors refuses shared tensors)."""
    state = model.state_dict()
    dropped = {f"{name}.weight" for name in quantized}
    output = model.get_output_embeddings()
    if output is not None and output.weight is model.get_input_embeddings().weight:
        dropped |= {f"{name}.weight" for name, module in model.named_modules() if module is output}
    return {key: tensor.detach() for key, tensor in state.items() if key not in dropped}


def _quantized_tensors(name: str, weight: torch.Tensor, scheme: QuantScheme,
                       group_size: int | None) -> dict[str, torch.Tensor]:
    quantized = quantize_weight(weight, BITS[scheme], group_size)
    if scheme is QuantScheme.INT8:
        return {f"{name}.weight": quantized.values, f"{name}.weight_scale": quantized.scale}
    return {f"{name}.weight_packed": pack_int4(quantized.values), f"{name}.weight_scale": quantized.scale,
            f"{name}.weight_shape": torch.tensor(list(weight.shape), dtype=torch.int64)}


def _weight_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))
