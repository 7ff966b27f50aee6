"""The pretrain recipe on a tiny model and the Shakespeare corpus, on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmops.trainer.config import exit_codes, layout
from llmops.trainer.config.training import PretrainRunConfig
from llmops.trainer.train.checkpoint import Preempted
from llmops.trainer.train.metrics import MetricsLog
from llmops.trainer.train.pretrain import train
from tests.integration.preemption import SigtermAt
from tests.integration.torchrun import run_two

BIN = Path(sys.executable).parent


def run_config(dataset: Path, output: Path, **training: Any) -> PretrainRunConfig:
    return PretrainRunConfig.model_validate({
        "dataUri": str(dataset), "outputUri": str(output),
        "model": {"hiddenSize": 64, "numLayers": 2, "numHeads": 4, "kvHeads": 2, "contextLength": 64},
        "training": {"maxSteps": 40, "batch": {"microBatchSize": 8}, "optimizer": {"learningRate": 3e-3},
                     "schedule": {"warmupSteps": 4}, "logIntervalSteps": 1, "evalIntervalSteps": 20,
                     "evalBatches": 4, **training},
        "checkpoint": {"intervalSteps": 10, "keepLast": 2},
        "lineage": {"pretrainJob": "tiny"},
    })


def losses(history: list[dict[str, Any]]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def test_loss_decreases_and_the_model_exports_in_hugging_face_format(dataset: Path, tmp_path: Path) -> None:
    metrics = MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115
    summary, model = train(run_config(dataset, tmp_path), metrics)
    curve = losses(metrics.history)
    assert curve[40] < curve[1] - 0.75, curve  # nats: far beyond step-to-step noise
    assert summary["validationLoss"] is not None and summary["parameters"] > 10_000

    exported = tmp_path / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
                 "model-card.md", "lineage.json", "loss-curve.png"):
        assert (exported / name).is_file(), name
    assert (exported / "loss-curve.png").read_bytes().startswith(b"\x89PNG")
    loaded = AutoModelForCausalLM.from_pretrained(exported)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    ids = torch.tensor([tokenizer.encode("To be, or not to be")])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids), atol=1e-5)
    lineage = json.loads((exported / "lineage.json").read_text())
    assert lineage["pretrainJob"] == "tiny" and len(lineage["datasetManifestSha256"]) == 64
    assert "finalLoss" in (exported / "model-card.md").read_text()


def test_a_preempted_run_resumes_on_the_same_loss_curve(dataset: Path, tmp_path: Path) -> None:
    straight = MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115
    train(run_config(dataset, tmp_path / "straight", maxSteps=20), straight)

    with pytest.raises(Preempted):
        train(run_config(dataset, tmp_path / "resumed", maxSteps=20), SigtermAt(13))
    assert (tmp_path / "resumed" / "checkpoints" / "step-00000013" / "meta.json").is_file()
    resumed = MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115
    train(run_config(dataset, tmp_path / "resumed", maxSteps=20), resumed)
    first, second = losses(straight.history), losses(resumed.history)
    assert min(second) == 14  # started after the checkpoint
    for step in range(14, 21):
        assert second[step] == pytest.approx(first[step], rel=1e-5, abs=1e-6), step


def test_a_new_run_never_resumes_from_an_earlier_runs_checkpoints(dataset: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator names each run (a new spec generation or new inputs: a new run) in LLMOPS_RUN.
    monkeypatch.setenv(layout.RUN_ENV, "tiny-train-1")
    train(run_config(dataset, tmp_path, maxSteps=20), MetricsLog(enabled=False))
    monkeypatch.setenv(layout.RUN_ENV, "tiny-train-2")
    with pytest.raises(Preempted):
        train(run_config(dataset, tmp_path, maxSteps=20), SigtermAt(5))
    # Run 2 started from step 1, not from run 1's step 20, and its first checkpoint removed run 1's.
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000005"]
    assert json.loads((checkpoints / "step-00000005" / "meta.json").read_text())["run"] == "tiny-train-2"
    resumed = MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115
    train(run_config(dataset, tmp_path, maxSteps=20), resumed)  # the same run again: it resumes from its own
    assert min(losses(resumed.history)) == 6


def test_only_the_newest_checkpoints_are_kept_and_the_last_step_is_one(dataset: Path, tmp_path: Path) -> None:
    train(run_config(dataset, tmp_path, maxSteps=35), MetricsLog(enabled=False))  # every 10 steps, keep 2
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000030", "step-00000035"]


def test_cli_exit_codes(dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dataUri": str(dataset), "outputUri": str(tmp_path), "training": {}}))
    result = subprocess.run([str(BIN / "llmops-pretrain"), "--config", str(bad)], capture_output=True, text=True)
    assert result.returncode == exit_codes.CONFIG_ERROR and "maxSteps is required" in result.stderr

    nan = run_config(dataset, tmp_path / "nan", maxSteps=5).to_wire()
    nan["training"]["optimizer"]["learningRate"] = 1.0  # diverges at once...
    nan["training"]["gradientClipNorm"] = None
    nan["model"]["normEps"] = 1e-30
    cfg = tmp_path / "nan.yaml"
    cfg.write_text(yaml.safe_dump(nan))
    result = subprocess.run([str(BIN / "llmops-pretrain"), "--config", str(cfg)], capture_output=True, text=True)
    assert result.returncode in (exit_codes.SUCCESS, exit_codes.NON_FINITE_LOSS)  # ...or survives; never crashes
    if result.returncode == exit_codes.NON_FINITE_LOSS:
        assert "NonFiniteLoss" in result.stderr


@pytest.mark.slow
def test_two_processes_match_one_process_accumulating_two(dataset: Path, tmp_path: Path) -> None:
    single = MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115
    train(run_config(dataset, tmp_path / "one", maxSteps=6, batch={"microBatchSize": 4,
                                                                    "gradientAccumulationSteps": 2}), single)
    config = run_config(dataset, tmp_path / "two", maxSteps=6, batch={"microBatchSize": 4})
    events = run_two("llmops-pretrain", config, tmp_path / "two.yaml")
    two = {e["step"]: e["loss"] for e in events if e.get("loss") is not None}
    one = losses(single.history)
    # Same data (batch index = rank x accumulation + micro-step), gradients averaged by DDP: the same run.
    for step in range(1, 7):
        assert two[step] == pytest.approx(one[step], rel=1e-3), (step, two, one)
    shutil.rmtree(tmp_path / "two", ignore_errors=True)
