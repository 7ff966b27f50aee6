"""Weight-only quantization: the arithmetic (error bounds, int4 packing), the compressed-tensors directory it
writes, its refusals, and the quantized weight our server computes with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from llmops.trainer.compress.qlinear import Kernel, QuantizedWeight, weight_bytes
from llmops.trainer.compress.quantize import (
    QuantizedTensors,
    dequantize,
    pack_int4,
    quantize,
    quantize_weight,
    read_weight_quantization,
    unpack_int4,
)
from llmops.trainer.config.finetune import QuantizeConfig


def tiny_llama(directory: Path, hidden: int = 64, intermediate: int = 128, vocab: int = 64) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def test_int8_round_trip_is_within_half_a_step_of_each_channel() -> None:
    weight = torch.randn(48, 96) * torch.logspace(-3, 1, 48)[:, None]  # channels of very different ranges
    quantized = quantize_weight(weight, bits=8)
    assert quantized.values.dtype == torch.int8 and quantized.scale.shape == (48, 1)
    assert quantized.values.abs().max() <= 127
    error = (dequantize(quantized) - weight).abs()
    assert (error <= quantized.scale / 2 * (1 + 1e-6)).all()
    # Each channel's largest weight is exact up to rounding of the scale: the range is used in full.
    assert torch.allclose(dequantize(quantized).abs().amax(1), weight.abs().amax(1), rtol=1e-6)


def test_int4_round_trip_is_within_half_a_step_of_each_group() -> None:
    weight = torch.randn(32, 128)
    weight[:, 64:] *= 100  # one group's outliers must not cost the other group its precision
    quantized = quantize_weight(weight, bits=4, group_size=64)
    assert quantized.scale.shape == (32, 2) and quantized.values.abs().max() <= 7
    error = (dequantize(quantized) - weight).abs().reshape(32, 2, 64)
    assert (error <= quantized.scale[..., None] / 2 * (1 + 1e-6)).all()
    assert error[:, 0].max() < weight[:, :64].abs().max() / 14 * 1.01


def test_a_zero_channel_stays_zero() -> None:
    weight = torch.randn(4, 16)
    weight[2] = 0
    assert torch.equal(dequantize(quantize_weight(weight, bits=8))[2], torch.zeros(16))


def test_int4_packing_matches_the_compressed_tensors_layout_and_unpacks_exactly() -> None:
    values = torch.tensor([[-8, -7, 0, 1, 2, 3, 6, 7]], dtype=torch.int8)
    packed = pack_int4(values)
    # value j of eight sits in bits 4j..4j+3 as value + 8: 0x F E B A 9 8 1 0 read from the top nibble down.
    assert packed.dtype == torch.int32 and packed.item() == 0xFEBA9810 - 2**32
    every = torch.randint(-8, 8, (16, 40), dtype=torch.int8)  # 40: a row padded to 48 values
    assert pack_int4(every).shape == (16, 5)
    assert torch.equal(unpack_int4(pack_int4(every), 40), every)


@pytest.mark.parametrize("group_size", [96, 48])
def test_a_group_size_that_does_not_divide_an_input_width_is_refused_naming_the_field(tmp_path: Path,
                                                                                     group_size: int) -> None:
    base = tiny_llama(tmp_path / "base")
    config = QuantizeConfig.model_validate({"scheme": "int4", "groupSize": group_size})
    with pytest.raises(ValueError, match=rf"quantize.groupSize {group_size} does not divide the input width"):
        quantize(base, config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_ignored_name_that_is_no_linear_is_refused(tmp_path: Path) -> None:
    base = tiny_llama(tmp_path / "base")
    with pytest.raises(ValueError, match="quantize.ignore names model.layers.9.mlp"):
        quantize(base, QuantizeConfig(ignore=["model.layers.9.mlp"]), tmp_path / "out")


def test_int8_directory_is_compressed_tensors_int_quantized(tmp_path: Path) -> None:
    base = tiny_llama(tmp_path / "base")
    ignore = ["lm_head", "model.layers.1.mlp.down_proj"]
    summary = quantize(base, QuantizeConfig(ignore=ignore), tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    assert sorted(config["ignore"]) == sorted(ignore)
    weights = config["config_groups"]["group_0"]["weights"]
    assert weights.items() >= {"num_bits": 8, "strategy": "channel", "symmetric": True, "type": "int"}.items()
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    assert tensors["model.layers.0.self_attn.q_proj.weight"].dtype == torch.int8
    assert tensors["model.layers.0.self_attn.q_proj.weight_scale"].shape == (64, 1)
    assert tensors["model.layers.1.mlp.down_proj.weight"].dtype == torch.float32
    assert tensors["lm_head.weight"].dtype == torch.float32
    assert summary["quantizedModules"] == 2 * 7 - 1 and summary["scheme"] == "int8"
    assert read_weight_quantization(json.loads((tmp_path / "out" / "config.json").read_text())).bits == 8


def test_int4_directory_is_compressed_tensors_pack_quantized(tmp_path: Path) -> None:
    base = tiny_llama(tmp_path / "base")
    summary = quantize(base, QuantizeConfig.model_validate({"scheme": "int4", "groupSize": 32}), tmp_path / "out")
    group = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]["config_groups"]
    assert group["group_0"]["format"] == "pack-quantized"
    assert group["group_0"]["weights"]["strategy"] == "group" and group["group_0"]["weights"]["group_size"] == 32
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    name = "model.layers.0.mlp.down_proj"  # [64, 128]
    assert tensors[f"{name}.weight_packed"].shape == (64, 16) and tensors[f"{name}.weight_packed"].dtype == torch.int32
    assert tensors[f"{name}.weight_scale"].shape == (64, 4)
    assert tensors[f"{name}.weight_shape"].tolist() == [64, 128]
    assert f"{name}.weight" not in tensors
    assert summary["groupSize"] == 32


def test_int8_weights_are_under_three_tenths_of_fp32_where_linear_layers_dominate(tmp_path: Path) -> None:
    base = tiny_llama(tmp_path / "base", hidden=256, intermediate=768, vocab=32)
    summary = quantize(base, QuantizeConfig(), tmp_path / "out")
    assert summary["sizeBeforeBytes"] == (base / "model.safetensors").stat().st_size
    assert summary["sizeAfterBytes"] <= 0.3 * summary["sizeBeforeBytes"]


def test_tokenizer_and_generation_config_come_along(tmp_path: Path) -> None:
    base = tiny_llama(tmp_path / "base")
    (base / "tokenizer.json").write_text("{}")
    quantize(base, QuantizeConfig(), tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.json").read_text() == "{}"
    assert (tmp_path / "out" / "generation_config.json").is_file()


def test_a_config_with_activation_quantization_is_refused() -> None:
    config = {"quantization_config": {
        "quant_method": "compressed-tensors", "format": "int-quantized",
        "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "strategy": "channel"},
                                "input_activations": {"num_bits": 8}}}}}
    with pytest.raises(ValueError, match="input_activations"):
        read_weight_quantization(config)
    assert read_weight_quantization({"quantization_config": {"quant_method": "bitsandbytes"}}) is None


# --- The quantized weight the server computes with ----------------------------------------------------------

def quantized_weight(bits: int, rows: int = 48, columns: int = 64, kernel: Kernel = Kernel.PACKED,
                     group: int | None = None) -> tuple[QuantizedWeight, QuantizedTensors]:
    torch.manual_seed(rows)
    quantized = quantize_weight(torch.randn(rows, columns), bits, group)
    storage = quantized.values if bits == 8 else pack_int4(quantized.values)
    return QuantizedWeight.of(storage, quantized.scale, bits, columns, kernel), quantized


def packed_kernel_reference(x: torch.Tensor, quantized: QuantizedTensors) -> torch.Tensor:
    """What the packed kernels compute, in plain torch: bf16 input and scales, fp32 sums, a bf16 result."""
    weight = dequantize(QuantizedTensors(quantized.values, quantized.scale.bfloat16().float()))
    return F.linear(x.bfloat16().float(), weight)


BF16_ROUNDING = {"rtol": 2**-8, "atol": 2**-8}
"""The result's rounding to bf16: half a unit in the last of its 8 significant bits, relative."""


@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, 32)])
def test_the_packed_kernel_computes_the_dequantized_weight_on_bf16_activations(bits: int, group: int | None) -> None:
    weight, quantized = quantized_weight(bits, group=group)
    x = torch.randn(2, 5, 64)
    out = F.linear(x, weight)
    assert out.shape == (2, 5, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out, packed_kernel_reference(x, quantized), **BF16_ROUNDING)


@pytest.mark.parametrize("bits", [8, 4])
def test_the_dequantize_kernel_equals_the_dequantized_weight_in_fp32(bits: int) -> None:
    weight, quantized = quantized_weight(bits, kernel=Kernel.DEQUANTIZE, group=16 if bits == 4 else None)
    x, bias = torch.randn(3, 64), torch.randn(48)
    torch.testing.assert_close(F.linear(x, weight, bias), F.linear(x, dequantize(quantized), bias))


@pytest.mark.parametrize("bits", [8, 4])
def test_rows_concatenate_and_slice_as_the_runner_fuses_them(bits: int) -> None:
    """Runner._fuse: torch.cat of q/k/v weights, then each projection's `.data` becomes a row slice of it."""
    group = 32 if bits == 4 else None
    (q, q_tensors), (k, k_tensors) = quantized_weight(bits, 64, group=group), quantized_weight(bits, 16, group=group)
    fused = torch.cat([q.data, k.data])
    assert isinstance(fused, QuantizedWeight) and fused.out_features == 80
    x = torch.randn(4, 64)
    both = QuantizedTensors(torch.cat([q_tensors.values, k_tensors.values]),
                            torch.cat([q_tensors.scale, k_tensors.scale]))
    torch.testing.assert_close(F.linear(x, fused), packed_kernel_reference(x, both), **BF16_ROUNDING)
    k.data = fused[64:80]  # the projection now shares the fused storage
    assert k.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    assert torch.equal(k.dequantized(), dequantize(k_tensors))
    with pytest.raises(TypeError, match="row slices only"):
        fused[:, :8]


def test_memory_counts_each_storage_once_with_the_scales() -> None:
    weight, _ = quantized_weight(8, 48, 64)
    view = weight[0:16]
    assert weight_bytes([weight, view]) == 48 * 64 + 48 * 4 + 16 * 4
