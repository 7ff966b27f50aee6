"""A quantized model end to end: FineTune method quantize's directory loads in transformers (with the
compressed-tensors package) and in our loader (without it), and llmops-serve answers from it over HTTP with the
greedy tokens of the same quantized model's dequantized reference."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmops.trainer.compress.qlinear import QuantizedLinear, QuantizedWeight
from llmops.trainer.compress.quantize import quantize
from llmops.trainer.config.finetune import QuantizeConfig
from llmops.trainer.config.serve import Dtype
from llmops.trainer.serve.loader import load
from tests.integration.conftest import BIN
from tests.integration.test_serve import ServerProcess

PROMPT = "To be, or not to be"
SCHEMES = ["int8", "int4"]


def group_size_for(base: Path) -> int:
    """The largest group size that divides every input width of the base (hidden and MLP sizes)."""
    config = json.loads((base / "config.json").read_text())
    return next(g for g in (64, 32, 16, 8) if config["hidden_size"] % g == 0 and config["intermediate_size"] % g == 0)


@pytest.fixture(scope="module", params=SCHEMES)
def quantized(request: pytest.FixtureRequest, base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    extra = {"groupSize": group_size_for(base_model)} if request.param == "int4" else {}
    out = tmp_path_factory.mktemp(request.param) / "model"
    quantize(base_model, QuantizeConfig.model_validate({"scheme": request.param, **extra}), out)
    return out


class BF16RoundedLinear(nn.Linear):
    """The dequantized reference of a QuantizedLinear: its weight dequantized (with the bf16 scales the packed
    kernels use), its input and result rounded to bf16 as those kernels round them."""

    @classmethod
    def of(cls, quantized: QuantizedLinear) -> BF16RoundedLinear:
        weight: QuantizedWeight = quantized.weight
        linear = cls(weight.in_features, weight.out_features, bias=False)
        values = weight.values().float().reshape(weight.out_features, weight.scale.shape[1], -1)
        scale = weight.scale.bfloat16().float()[..., None]
        linear.weight = nn.Parameter((values * scale).reshape(weight.out_features, -1), requires_grad=False)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.bfloat16().float()).bfloat16().float()


def dequantized_reference(directory: Path) -> nn.Module:
    model = load(directory, Dtype.FLOAT32, "cpu").model
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantizedLinear):
            model.set_submodule(name, BF16RoundedLinear.of(module))
    return model


def test_transformers_loads_it_and_its_logits_are_close_to_our_loaders(quantized: Path) -> None:
    pytest.importorskip("compressed_tensors")
    ids = AutoTokenizer.from_pretrained(quantized)(PROMPT, return_tensors="pt")["input_ids"]
    theirs = AutoModelForCausalLM.from_pretrained(quantized).eval()
    ours = load(quantized, Dtype.AUTO, "cpu").model
    assert isinstance(ours.model.layers[0].self_attn.q_proj, QuantizedLinear)
    assert isinstance(ours.lm_head, nn.Linear) and not isinstance(ours.lm_head.weight, QuantizedWeight)
    with torch.inference_mode():
        want, got = theirs(ids).logits, ours(ids).logits
    # transformers computes the dequantized weights in fp32, our kernels round activations to bf16.
    assert (got - want).abs().max() <= 0.02 * want.abs().max()


def test_our_loader_keeps_the_weights_quantized_in_memory(quantized: Path) -> None:
    model = load(quantized, Dtype.AUTO, "cpu").model
    linears = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(linears) == 7 * model.config.num_hidden_layers
    assert all(m.weight.dtype in (torch.int8, torch.int32) for m in linears)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "norm" in n or "embed" in n)


@pytest.fixture(scope="module")
def server(quantized: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    limits = {"maxPromptTokens": 64, "maxNewTokens": 32, "maxConcurrentRequests": 4, "maxBatchSize": 4}
    running = ServerProcess([str(BIN / "llmops-serve"), "--model", str(quantized)], tmp_path_factory.mktemp("serve"),
                            limits)
    yield running
    running.stop()


@pytest.mark.slow
def test_llmops_serve_answers_with_the_dequantized_references_greedy_tokens(server: ServerProcess,
                                                                          quantized: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(quantized)
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    reference = dequantized_reference(quantized)
    want = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    want = want[0, ids.shape[1]:].tolist()
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 24, "temperature": 0, "return_token_ids": True}
    answer = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert choice["token_ids"] == want
    assert choice["text"] == tokenizer.decode(want, skip_special_tokens=True)


def test_an_evaluation_scores_it_as_it_is_served(quantized: Path, base_model: Path, tmp_path: Path) -> None:
    from llmops.trainer.config.evaluate import EvalJobConfig
    from llmops.trainer.evaluate import run

    model, _ = run.load(quantized)  # what the evaluation workload scores: the served model's kernels
    assert any(isinstance(m, QuantizedLinear) for m in model.modules())
    text = tmp_path / "heldout.txt"
    text.write_text("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n")
    config = EvalJobConfig.model_validate({
        "modelUri": str(quantized), "baselineUri": str(base_model), "outputUri": str(tmp_path / "out"),
        "tasks": [{"name": "heldout", "type": "perplexity", "dataUri": str(text)}],
        "thresholds": [{"task": "heldout", "metric": "perplexity", "relativeTo": "baseline", "tolerance": 1000}]})
    results = run.evaluate(config)
    (perplexity,) = [r for r in results["results"] if r["metric"] == "perplexity"]
    # Weight-only quantization of a trained model moves its perplexity a little, never to a different model's.
    assert perplexity["value"] == pytest.approx(perplexity["baselineValue"], rel=0.05)
    assert results["verdict"] == "Passed"
