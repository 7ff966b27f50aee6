"""Weight-only quantization served: the original fp32 model, its int8 and its int4 (FineTune method quantize)
served by our engine (in-process, continuous batching over the KV cache), same model, same run.

Model: a Llama from config, briefly trained on Shakespeare (quick: hidden 64, 2 layers, vocab 512, 30 steps;
full: hidden 512, 8 layers, 8 heads, 4 KV heads, vocab 8192, 40 steps), BPE trained on the same plays, nothing
downloaded (the corpus is the one hack/fetch-corpora.sh installs). Per model: bytes of the loaded weights (each
storage once, with scales and kernel copies), perplexity on held-out plays (the same windows for each model),
output tokens/s at 1 and 16 concurrent closed-loop clients (a fixed prompt of PROMPT_TOKENS ids, exactly
OUTPUT_TOKENS generated, end-of-sequence ignored, greedy). Last line: `compress: ratio=X.XX` (int8 / fp32 output
tokens/s at 16 clients) with the size, perplexity and single-client figures.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_description  # bench/machine.py (scripts run with bench/ on sys.path)

PROMPT_TOKENS = 32
OUTPUT_TOKENS = 64
TRAIN_PLAYS = ("hamlet_gut.txt", "macbeth_gut.txt", "othello_gut.txt")
HELDOUT_PLAYS = ("tempest_gut.txt",)
SHAPES = {"quick": {"hidden": 64, "layers": 2, "heads": 4, "kv": 2, "vocab": 512, "steps": 30, "group": 32},
          "full": {"hidden": 512, "layers": 8, "heads": 8, "kv": 4, "vocab": 8192, "steps": 40, "group": 128}}


def play_text(names: tuple[str, ...]) -> str:
    from llmops.trainer.data.sources import corpora_dir

    directory = corpora_dir() / "shakespeare"
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise SystemExit(f"missing {missing} in {directory}: run hack/fetch-corpora.sh")
    return "\n\n".join((directory / n).read_text(encoding="utf-8", errors="replace") for n in names)


def prepare(directory: Path, shape: dict[str, int]) -> None:
    """Train the tokenizer and, briefly, the model; save both in Hugging Face format."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from llmops.trainer.config.model import ModelConfig
    from llmops.trainer.train.model import hf_config

    text = play_text(TRAIN_PLAYS)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(text.split("\n\n"), trainers.BpeTrainer(
        vocab_size=shape["vocab"], special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=shape["hidden"], num_layers=shape["layers"], num_heads=shape["heads"],
                         kv_heads=shape["kv"], context_length=256)
    model = LlamaForCausalLM(hf_config(config, len(tokenizer), tokenizer.eos_token_id))
    ids = torch.tensor(tokenizer(text)["input_ids"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(shape["steps"]):
        starts = torch.randint(0, len(ids) - 129, (8,), generator=generator)
        batch = torch.stack([ids[s:s + 129] for s in starts])
        model(batch[:, :-1], labels=batch[:, :-1]).loss.backward()  # transformers shifts the labels
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def perplexity(model: Any, windows: list[list[int]]) -> float:
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for window in windows:
            ids = torch.tensor([window])
            logits = model(ids).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += len(window) - 1
    return math.exp(total / count)


def tokens_per_second(runner: Any, eos_ids: list[int], vocab: int, concurrency: int, seconds: float) -> float:
    """Closed-loop clients on the engine, stepped in this thread: each sends its next request when its last ends."""
    from llmops.trainer.serve.engine import Engine, Group
    from llmops.trainer.serve.sampling import SamplingParams

    finished: list[int] = []
    produced = 0

    def emit(outputs: list) -> None:
        nonlocal produced
        produced += sum(1 for o in outputs if o.token >= 0)
        finished.extend(1 for o in outputs if o.finish_reason is not None)

    engine = Engine(runner, eos_ids, emit)
    rng = random.Random(concurrency)
    params = SamplingParams(max_tokens=OUTPUT_TOKENS, temperature=0.0, ignore_eos=True)

    def submit() -> None:
        engine.add(Group.of([rng.randrange(1, vocab) for _ in range(PROMPT_TOKENS)], params, 1, [None]))

    submit()  # warm-up: one request, not counted
    while engine.has_work():
        engine.step()
    produced, finished[:] = 0, []
    for _ in range(concurrency):
        submit()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.step()
        for _ in range(len(finished)):
            submit()
        finished[:] = []
    return produced / (time.perf_counter() - start)


def measure(directory: Path, windows: list[list[int]], seconds: float) -> dict[str, float]:
    from llmops.trainer.compress.qlinear import weight_bytes
    from llmops.trainer.config.serve import Dtype
    from llmops.trainer.serve.loader import load
    from llmops.trainer.serve.runner import Runner

    loaded = load(directory, Dtype.FLOAT32, "cpu")
    model = loaded.model
    result = {"ppl": perplexity(model, windows)}
    runner = Runner(model, slots=16, max_len=PROMPT_TOKENS + OUTPUT_TOKENS + 1)
    for concurrency in (1, 16):
        result[f"tps{concurrency}"] = tokens_per_second(runner, loaded.eos_ids, model.config.vocab_size,
                                                        concurrency, seconds)
    fused = [t for layer in runner.fused for t in layer if t is not None]
    result["bytes"] = weight_bytes([*model.parameters(), *model.buffers(), *fused])
    return result




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 s per measurement (under 2 minutes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer

    from llmops.trainer.compress.quantize import quantize
    from llmops.trainer.config.finetune import QuantizeConfig

    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    shape, seconds = SHAPES[mode], 3.0 if args.quick else 15.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.monotonic()
        prepare(work / "fp32", shape)
        print(f"model: Llama hidden {shape['hidden']}, {shape['layers']} layers, vocab {shape['vocab']}, trained "
              f"{shape['steps']} steps ({time.monotonic() - started:.0f} s); prompt {PROMPT_TOKENS}, output "
              f"{OUTPUT_TOKENS} tokens, greedy, {seconds:.0f} s per measurement, {args.threads} torch thread(s)")
        quantize(work / "fp32", QuantizeConfig(), work / "int8")
        quantize(work / "fp32", QuantizeConfig.model_validate({"scheme": "int4", "groupSize": shape["group"]}),
                 work / "int4")
        ids = AutoTokenizer.from_pretrained(work / "fp32")(play_text(HELDOUT_PLAYS))["input_ids"]
        windows = [ids[i:i + 256] for i in range(0, min(len(ids), 256 * (8 if args.quick else 24)) - 255, 256)]
        results = {}
        for name in ("fp32", "int8", "int4"):
            results[name] = r = measure(work / name, windows, seconds)
            files = sum(f.stat().st_size for f in (work / name).glob("*.safetensors"))
            print(f"{name:<5} weights in memory {r['bytes'] / 2**20:7.2f} MiB (files {files / 2**20:7.2f} MiB)  "
                  f"perplexity {r['ppl']:8.3f}  tokens/s c=1 {r['tps1']:7.1f}  c=16 {r['tps16']:7.1f}", flush=True)
    print(f"cpu: {cpu_description()}; torch {torch.__version__}")
    base = results["fp32"]

    def figures(name: str) -> str:
        r = results[name]
        return (f"{name}_size={r['bytes'] / base['bytes']:.2f}x {name}_ppl={100 * (r['ppl'] / base['ppl'] - 1):+.1f}% "
                f"{name}_tps1={r['tps1'] / base['tps1']:.2f}x {name}_tps16={r['tps16'] / base['tps16']:.2f}x")

    print(f"compress: ratio={results['int8']['tps16'] / base['tps16']:.2f} {figures('int8')} {figures('int4')}")


if __name__ == "__main__":
    main()
