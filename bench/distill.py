"""Distillation (FineTune method distill) against training on the data alone: how close each student comes to
the teacher on held-out text.

A teacher is pretrained on three plays (our Dataset and PretrainJob workloads, BPE trained on the same plays,
nothing downloaded: the corpus is the one hack/fetch-corpora.sh installs). Two students of the same smaller shape
then train through `finetune` on the same passages of those plays, from the same initialisation (same seed), for
the same steps at the same learning rate: one distils (crossEntropyWeight 0, temperature 1 unless --temperature
says otherwise), the other learns the data alone (crossEntropyWeight 1). Measured on passages of The Tempest,
which none of them saw: the mean per-token KL(teacher || student) at temperature 1, and each model's
cross-entropy.

Last line: `distill: ratio=X.XX` (data-only KL / distilled KL: higher is better) with both KLs and the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_description  # bench/machine.py (scripts run with bench/ on sys.path)

TRAIN_PLAYS = ("hamlet_gut.txt", "macbeth_gut.txt", "othello_gut.txt")
HELDOUT_PLAY = "tempest_gut.txt"
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {"vocab": 512, "teacher": {"hiddenSize": 64, "numLayers": 2, "numHeads": 4, "kvHeads": 2},
              "student": {"hiddenSize": 32, "numLayers": 1, "numHeads": 2}, "pretrain_steps": 60, "steps": 40,
              "records": 400, "heldout": 64, "learning_rate": 1e-2},
    "full": {"vocab": 2048, "teacher": {"hiddenSize": 256, "numLayers": 4, "numHeads": 8, "kvHeads": 4},
             "student": {"hiddenSize": 128, "numLayers": 2, "numHeads": 4, "kvHeads": 2}, "pretrain_steps": 400,
             "steps": 200, "records": 2000, "heldout": 256, "learning_rate": 3e-3},
}
CONTEXT, MAX_LENGTH, BATCH, PRETRAIN_LEARNING_RATE = 128, 128, 16, 3e-3


def passages(play: str, count: int | None = None) -> list[str]:
    """Passages of at least 8 words of a play, in order (a Dataset splits documents the same way)."""
    from llmops.trainer.data.sources import corpora_dir

    path = corpora_dir() / "shakespeare" / play
    if not path.is_file():
        raise SystemExit(f"missing {path}: run hack/fetch-corpora.sh")
    found = [p.strip() for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n")
             if len(p.split()) >= 8]
    return found[:count]


def pretrain_teacher(work: Path, settings: dict[str, Any]) -> Path:
    """Tokenizer and teacher through the Dataset and PretrainJob workloads; returns the exported model."""
    from llmops.trainer.config.data import DataJobConfig
    from llmops.trainer.config.training import PretrainRunConfig
    from llmops.trainer.data import pipeline
    from llmops.trainer.data.engines import InlineEngine
    from llmops.trainer.train.metrics import MetricsLog
    from llmops.trainer.train.pretrain import train

    pipeline.run(DataJobConfig.model_validate({
        "sources": [{"name": "plays", "uri": "builtin://shakespeare", "include": list(TRAIN_PLAYS)}],
        "filters": {"quality": {"minWords": 5, "minAlphabeticWordFraction": 0.5}},
        "tokenizer": {"train": {"vocabSize": settings["vocab"]}}, "outputUri": str(work / "data")}), InlineEngine())
    train(PretrainRunConfig.model_validate({
        "dataUri": str(work / "data"), "outputUri": str(work / "teacher"),
        "model": {**settings["teacher"], "contextLength": CONTEXT},
        "training": {"maxSteps": settings["pretrain_steps"], "batch": {"microBatchSize": BATCH},
                     "optimizer": {"learningRate": PRETRAIN_LEARNING_RATE}, "schedule": {"warmupSteps": 10}},
        "checkpoint": {"intervalSteps": 100_000}}), MetricsLog(enabled=False))
    return work / "teacher" / "model"


def train_student(teacher: Path, records: Path, output: Path, settings: dict[str, Any],
                  cross_entropy_weight: float, temperature: float) -> tuple[Any, float]:
    """A fresh student distilled from `teacher` with the given share of plain cross-entropy; (method, seconds)."""
    from llmops.trainer.config.finetune import FineTuneRunConfig
    from llmops.trainer.train.finetune import finetune
    from llmops.trainer.train.metrics import MetricsLog

    config = FineTuneRunConfig.model_validate({
        "baseUri": str(teacher), "teacherUri": str(teacher), "dataUri": str(records), "outputUri": str(output),
        "method": "distill",
        "distill": {"temperature": temperature, "crossEntropyWeight": cross_entropy_weight,
                    "student": {**settings["student"], "contextLength": CONTEXT}},
        "data": {"validationFraction": 0.0, "maxLength": MAX_LENGTH},
        "training": {"maxSteps": settings["steps"], "batch": {"microBatchSize": BATCH},
                     "optimizer": {"learningRate": settings["learning_rate"], "weightDecay": 0.0},
                     "schedule": {"warmupSteps": 10, "kind": "cosine"}, "logIntervalSteps": 10},
        "checkpoint": {"intervalSteps": 100_000}})
    started = time.perf_counter()
    _, method = finetune(config, MetricsLog(enabled=False))
    return method, time.perf_counter() - started




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="teacher hidden 64 x 2 layers, student 32 x 1, 40 steps (under 2 minutes)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="distillation temperature (default 1: the temperature the KL is measured at)")
    args = parser.parse_args()
    settings = SETTINGS["quick" if args.quick else "full"]
    import torch

    from llmops.trainer.train.distill import kl_and_cross_entropy

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        work = Path(tmp)
        teacher_dir = pretrain_teacher(work, settings)
        texts = [p for play in TRAIN_PLAYS for p in passages(play)][: settings["records"]]
        records = work / "passages.jsonl"
        records.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        heldout = passages(HELDOUT_PLAY, settings["heldout"])
        results = {}
        for name, weight in (("distilled", 0.0), ("data-only", 1.0)):
            method, seconds = train_student(teacher_dir, records, work / name, settings, weight,
                                            args.temperature)
            kl, cross_entropy = kl_and_cross_entropy(method.model, method.teacher, heldout, method.tokenizer,
                                                     MAX_LENGTH)
            parameters = sum(p.numel() for p in method.model.parameters())
            results[name] = {"kl": kl, "ce": cross_entropy, "seconds": seconds, "parameters": parameters}
        teacher = method.teacher
        _, teacher_ce = kl_and_cross_entropy(teacher.model, teacher, heldout, method.tokenizer, MAX_LENGTH)
        teacher_parameters = sum(p.numel() for p in teacher.model.parameters())
    print(f"teacher {settings['teacher']} ({teacher_parameters / 1e6:.2f}M parameters, {settings['pretrain_steps']} "
          f"pretraining steps on {len(TRAIN_PLAYS)} plays), held-out cross-entropy {teacher_ce:.3f}")
    print(f"students {settings['student']} ({results['distilled']['parameters'] / 1e6:.2f}M parameters), "
          f"{settings['steps']} steps of {BATCH} x <= {MAX_LENGTH} tokens, lr {settings['learning_rate']}, "
          f"{len(texts)} passages, distillation temperature {args.temperature}; held out: {len(heldout)} passages "
          f"of {HELDOUT_PLAY}")
    for name, result in results.items():
        print(f"{name:<10} KL to teacher {result['kl']:.4f}  cross-entropy {result['ce']:.3f}  "
              f"{result['seconds']:.1f} s")
    print(f"cpu: {cpu_description()}")
    distilled, data_only = results["distilled"], results["data-only"]
    print(f"distill: ratio={data_only['kl'] / distilled['kl']:.2f} distilled_kl={distilled['kl']:.4f} "
          f"data_only_kl={data_only['kl']:.4f} steps={settings['steps']}")


if __name__ == "__main__":
    main()
