"""Quantized Linear layers that stay quantized in memory, and a loader for compressed-tensors model directories
that needs neither the compressed-tensors package nor transformers' quantizers.

`QuantizedWeight` is the integer weight itself (int8 [out, in], or int4 as compressed-tensors packs it: int32
[out, in / 8]) carrying its scales; it behaves as the [out, in] float weight wherever the model or the server's
runner uses one: `F.linear`, `torch.cat` along rows and row slices (the runner fuses q/k/v and gate/up that way),
`.data`. Other tensor operations see the raw integer storage.

Kernels, measured on this repository's 2-core AVX-512 (avx512_bf16) CPU with torch 2.9.1, one thread, a
2048 x 768 weight (bench/compress.py measures whole models):

| batch | fp32 F.linear | int8pack_mm fp32 | int8pack_mm bf16 | int4pack_mm bf16 | dequantize per forward |
|---|---|---|---|---|---|
| 1  | 392 us  | 3338 us  | 130 us | 127 us | 941 us (int8), ~3x that (int4) |
| 16 | 1089 us | 36150 us | 969 us | 997 us | 1587 us (int8) |

torch's int8 and int4 weight-only kernels are fast only on bf16 activations (their fp32 path is a scalar loop),
so `Kernel.PACKED` rounds a layer's input to bf16, runs the kernel (fp32 accumulation) and returns the bf16
result in the input's dtype, as IPEX's weight-only quantization does in its bf16 low-precision mode. On other
devices, and for int4 shapes the CPU kernel refuses (output rows not a multiple of 16, group size not 32, 64,
128 or 256), `Kernel.DEQUANTIZE` dequantizes the weight to the input's dtype for each forward.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .quantize import QuantizedTensors, WeightQuantization, dequantize, unpack_int4

__all__ = ["Kernel", "QuantizedLinear", "QuantizedWeight", "load_quantized_model", "weight_bytes"]

INT4_KERNEL_GROUP_SIZES = (32, 64, 128, 256)
INT4_KERNEL_ROW_MULTIPLE = 16
INT4_ZERO_POINT = 8
KERNEL_ALIGNMENT = 64
"""Bytes: the AVX-512 kernels load operands aligned, and crash on a tensor that is not (safetensors' are not)."""
"""torch's int4 kernel takes unsigned values 0..15 and dequantizes (u - 8) * scale + zero; ours are signed, zero 0."""


class Kernel(StrEnum):
    PACKED = "packed"
    """torch's int8/int4 weight-only kernels on bf16-rounded activations (CPU): fast, bf16-level rounding."""
    DEQUANTIZE = "dequantize"
    """The weight dequantized to the activations' dtype for each forward: slower, exact to that dtype."""


class QuantizedWeight(torch.Tensor):
    """A Linear's quantized weight: the tensor's own storage holds the integer values, `scale` [out, groups]
    (float32) dequantizes them; `bits` 8 (storage int8 [out, in]) or 4 (int32 [out, ceil(in / 8)])."""

    scale: torch.Tensor
    bits: int
    in_features: int
    kernel: Kernel
    _packed: tuple[torch.Tensor, torch.Tensor] | None

    @staticmethod
    def of(storage: torch.Tensor, scale: torch.Tensor, bits: int, in_features: int,
           kernel: Kernel = Kernel.PACKED) -> QuantizedWeight:
        weight = torch.Tensor._make_subclass(QuantizedWeight, storage, False)
        weight.scale, weight.bits, weight.in_features, weight.kernel = scale.float(), bits, in_features, kernel
        weight._packed = None
        return weight

    @property
    def out_features(self) -> int:
        return self.scale.shape[0]

    @property
    def group_size(self) -> int:
        return self.in_features // self.scale.shape[1]

    def raw(self) -> torch.Tensor:
        """The integer storage as a plain tensor (a view)."""
        return self.as_subclass(torch.Tensor)

    def values(self) -> torch.Tensor:
        """Integer values, int8 [out, in]."""
        raw = self.raw()
        return raw if self.bits == 8 else unpack_int4(raw, self.in_features)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(QuantizedTensors(self.values(), self.scale), dtype)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self._uses_packed_kernel(x):
            rows = _aligned(x.reshape(-1, self.in_features).to(torch.bfloat16))
            packed, scales = self._packed_kernel_operands()
            if self.bits == 8:
                out = torch._weight_int8pack_mm(rows, packed, scales)
            else:
                out = torch._weight_int4pack_mm_for_cpu(rows, packed, self.group_size, scales)
            out = out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
            return out if bias is None else out + bias
        return F.linear(x, self.dequantized(x.dtype), bias)

    def extra_bytes(self) -> int:
        """Memory held beside the storage: scales and the kernel's own copy of the weight, once built."""
        own = self.untyped_storage().data_ptr()
        held = [self.scale, *(t for t in self._packed or () if t.untyped_storage().data_ptr() != own)]
        return sum(t.numel() * t.element_size() for t in held)

    def _uses_packed_kernel(self, x: torch.Tensor) -> bool:
        if self.kernel is not Kernel.PACKED or x.device.type != "cpu":
            return False
        return self.bits == 8 or (self.group_size in INT4_KERNEL_GROUP_SIZES
                                  and self.out_features % INT4_KERNEL_ROW_MULTIPLE == 0)

    def _packed_kernel_operands(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Built at first use: the fused q/k/v of the runner exists only after row concatenation. int4's CPU
        layout depends on the CPU (blocks of 64 rows with AVX-512), so it is never stored or sliced."""
        if self._packed is None:
            scales = self.scale.to(torch.bfloat16)
            if self.bits == 8:
                self._packed = (_aligned(self.raw()), scales[:, 0].contiguous())
            else:
                unsigned = self.values().to(torch.int32) + INT4_ZERO_POINT
                packed = torch._convert_weight_to_int4pack_for_cpu(unsigned, 1)
                # [groups, out, (scale, zero)]: symmetric, so every zero is 0.
                self._packed = (packed, torch.stack([scales.t(), torch.zeros_like(scales.t())], -1).contiguous())
        return self._packed

    # --- Behaving as a weight ------------------------------------------------------------------------------

    def _rows(self, index: Any) -> QuantizedWeight:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError(f"a quantized weight supports row slices only, not [{index!r}]")
        return QuantizedWeight.of(self.raw()[index], self.scale[index], self.bits, self.in_features, self.kernel)

    @staticmethod
    def _concatenate(weights: Iterable[torch.Tensor], dim: int = 0) -> QuantizedWeight:
        parts = list(weights)
        first = parts[0]
        if dim != 0 or not all(isinstance(p, QuantizedWeight) and (p.bits, p.in_features, p.kernel)
                               == (first.bits, first.in_features, first.kernel) for p in parts):
            raise TypeError("quantized weights concatenate along rows (dim 0), with one another of one scheme")
        return QuantizedWeight.of(torch.cat([p.raw() for p in parts]), torch.cat([p.scale for p in parts]),
                                  first.bits, first.in_features, first.kernel)

    def _adopt(self, other: QuantizedWeight) -> None:
        self.scale, self.bits, self.in_features, self.kernel = other.scale, other.bits, other.in_features, other.kernel
        self._packed = other._packed

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_arguments(*args, **kwargs)
            if isinstance(weight, QuantizedWeight) and not isinstance(x, QuantizedWeight):
                with torch._C.DisableTorchFunctionSubclass():
                    return weight.linear(x, bias)
        if func is torch.cat:
            return cls._concatenate(*args, **kwargs)
        if func is torch.Tensor.__getitem__:
            return args[0]._rows(args[1])
        if func in (torch.Tensor.data.__get__, torch.Tensor.detach):  # never trained: no autograd to cut
            return args[0]
        if func is torch.Tensor.data.__set__ and isinstance(args[1], QuantizedWeight):
            with torch._C.DisableTorchFunctionSubclass():
                func(*args)
            args[0]._adopt(args[1])
            return None
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, or a contiguous copy when it is not contiguous at an aligned address (a view of a row slice)."""
    if tensor.is_contiguous() and tensor.data_ptr() % KERNEL_ALIGNMENT == 0:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _linear_arguments(input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return input, weight, bias


class QuantizedLinear(nn.Module):
    """nn.Linear with a QuantizedWeight (and an optional full-precision bias)."""

    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        self.in_features, self.out_features = weight.in_features, weight.out_features
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @classmethod
    def from_compressed(cls, tensors: dict[str, torch.Tensor], quantization: WeightQuantization,
                        kernel: Kernel, dtype: torch.dtype) -> QuantizedLinear:
        """From one module's compressed-tensors entries (weight or weight_packed/weight_shape, weight_scale,
        optionally bias)."""
        scale = tensors["weight_scale"]
        if quantization.packed:
            in_features = int(tensors["weight_shape"][1])
            weight = QuantizedWeight.of(tensors["weight_packed"], scale, 4, in_features, kernel)
        else:
            weight = QuantizedWeight.of(tensors["weight"], scale, 8, tensors["weight"].shape[1], kernel)
        bias = tensors.get("bias")
        return cls(weight, bias.to(dtype) if bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        weight = self.weight
        scheme = "int8 per channel" if weight.bits == 8 else f"int4 group {weight.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{scheme}, kernel={weight.kernel}")


def weight_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes held by these tensors: each storage once (views share one), plus quantized weights' scales and
    kernel copies."""
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        if isinstance(tensor, QuantizedWeight):
            total += tensor.extra_bytes()
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


# --- Loading a compressed-tensors model directory -----------------------------------------------------------

def load_quantized_model(directory: Path, quantization: WeightQuantization, dtype: torch.dtype, device: str,
                         kernel: Kernel | None = None) -> nn.Module:
    """The causal LM in `directory` with its quantized Linear layers as QuantizedLinear (never materialised in
    full precision), everything else in `dtype` on `device`. Raises ValueError naming what does not fit."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    config = AutoConfig.from_pretrained(directory)
    del config.quantization_config  # transformers would hand it to its compressed-tensors quantizer
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    tensors = _read_safetensors(directory, device)
    kernel = kernel or (Kernel.PACKED if device == "cpu" else Kernel.DEQUANTIZE)
    quantized = _install_quantized_linears(model, tensors, quantization, kernel, dtype)
    rest = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()
            if k.rsplit(".", 1)[0] not in quantized}
    model.load_state_dict(rest, strict=False, assign=True)
    model.tie_weights()
    _rebuild_computed_buffers(model, device)
    missing = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if missing:
        raise ValueError(f"the weights in {directory} lack {', '.join(missing[:5])}")
    if (directory / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(directory)
    return model.eval()


def _read_safetensors(directory: Path, device: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [
        "model.safetensors"]
    if not (directory / files[0]).is_file():
        raise ValueError(f"a quantized model's weights must be safetensors; {directory} has no {files[0]}")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        # Copied out of the file's mapping: torch's allocations are aligned for the kernels, the file's are not.
        tensors |= {name: t.clone() for name, t in load_file(directory / file, device=device).items()}
    return tensors


def _install_quantized_linears(model: nn.Module, tensors: dict[str, torch.Tensor], quantization: WeightQuantization,
                               kernel: Kernel, dtype: torch.dtype) -> set[str]:
    """Replace each Linear that compressed-tensors quantized (every one but the ignored) by a QuantizedLinear."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in quantization.ignore]
    for name in names:
        if f"{name}.weight_scale" not in tensors:
            raise ValueError(f"{name} is neither in quantization_config.ignore nor quantized (no weight_scale)")
        own = {key[len(name) + 1:]: t for key, t in tensors.items() if key.rsplit(".", 1)[0] == name}
        model.set_submodule(name, QuantizedLinear.from_compressed(own, quantization, kernel, dtype))
    return set(names)


def _rebuild_computed_buffers(model: nn.Module, device: str) -> None:
    """Buffers computed at construction rather than saved (the rotary inverse frequencies) are still on the meta
    device: construct those modules again, for real. transformers' rotary modules take (config, device)."""
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            model.set_submodule(name, type(module)(config=model.config, device=device))
