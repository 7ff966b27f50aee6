"""Training and its CLIs against a real S3 API (moto's server, tests/s3_server.py): checkpoints on the store,
resume from them, the final-step checkpoint, and a missing bucket or object named with exit 78."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.trainer import storage
from llmops.trainer.config import exit_codes, layout
from llmops.trainer.config.result import WorkloadResult
from llmops.trainer.config.training import PretrainRunConfig
from llmops.trainer.train.checkpoint import Checkpointer, Preempted
from llmops.trainer.train.metrics import MetricsLog
from llmops.trainer.train.pretrain import train
from tests.integration.conftest import BIN
from tests.integration.preemption import SigtermAt
from tests.integration.test_pretrain import losses, run_config
from tests.integration.torchrun import ENV, command, write_config
from tests.s3_server import S3Server, workload_env


@pytest.fixture
def s3_dataset(dataset: Path, s3_bucket: str) -> str:
    """The tokenized Shakespeare dataset, published to the bucket as the data workload does."""
    uri = f"s3://{s3_bucket}/datasets/shakespeare"
    storage.upload_dir(dataset, uri, last=layout.MANIFEST_FILE)
    return uri


def every_5_steps(dataset: str, output: str) -> PretrainRunConfig:
    wire = run_config(dataset, output, maxSteps=12).to_wire()
    wire["checkpoint"]["intervalSteps"] = 5
    return PretrainRunConfig.model_validate(wire)


def quiet() -> MetricsLog:
    return MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115


def complete_checkpoints(output: str) -> list[str]:
    listed = storage.listing(layout.checkpoints_uri(output))
    return sorted(name.split("/")[0] for name in listed if name.endswith("/meta.json"))


def test_a_preempted_run_resumes_from_the_store_and_reports_its_newest_checkpoint(
        s3_dataset: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = f"s3://{s3_bucket}/runs/tiny"
    straight = quiet()
    train(run_config(s3_dataset, f"s3://{s3_bucket}/runs/straight", maxSteps=12), straight)

    with pytest.raises(Preempted):
        train(every_5_steps(s3_dataset, output), SigtermAt(7))
    assert complete_checkpoints(output) == ["step-00000005", "step-00000007"]

    # A new pod: nothing staged on this node, so the checkpoint must come from the store.
    monkeypatch.setenv("LLMOPS_CACHE", str(tmp_path / "new-node"))
    termination = tmp_path / "termination-log"
    termination.touch()
    monkeypatch.setenv("LLMOPS_TERMINATION_LOG", str(termination))
    resumed = quiet()
    _, model = train(every_5_steps(s3_dataset, output), resumed)

    first, second = losses(straight.history), losses(resumed.history)
    assert min(second) == 8  # continued after step 7, not from 0
    for step in range(8, 13):
        assert second[step] == pytest.approx(first[step], rel=1e-5, abs=1e-6), step
    assert complete_checkpoints(output) == ["step-00000010", "step-00000012"]  # keepLast 2, pruned on the store
    assert {"config.json", "model.safetensors", "tokenizer.json", "model-card.md"} <= set(
        storage.listing(layout.model_uri(output)))

    result = WorkloadResult.from_message(termination.read_text())
    assert result is not None and result.artifact_uri == layout.model_uri(output)
    assert result.checkpoint is not None and result.checkpoint.step == 12
    assert result.checkpoint.uri == f"{output}/checkpoints/step-00000012"
    assert result.parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_two_ranks_checkpoint_to_the_store_and_one_process_resumes_from_it(
        s3_dataset: str, s3_bucket: str, s3_server: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    output = f"s3://{s3_bucket}/runs/two"
    config = write_config(every_5_steps(s3_dataset, output), tmp_path / "two.yaml")
    result = subprocess.run(command("llmops-pretrain", config), capture_output=True, text=True, timeout=600,
                            env={**ENV, **s3_server.env, "LLMOPS_CACHE": str(tmp_path / "node")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert complete_checkpoints(output) == ["step-00000010", "step-00000012"]
    files = set(storage.listing(f"{output}/checkpoints/step-00000012"))
    assert {"meta.json", ".metadata", "rng-0.pt", "rng-1.pt"} <= files  # both ranks' shares were uploaded

    monkeypatch.setenv("LLMOPS_CACHE", str(tmp_path / "another-node"))
    wire = every_5_steps(s3_dataset, output).to_wire()
    wire["training"]["maxSteps"] = 14
    resumed = quiet()
    train(PretrainRunConfig.model_validate(wire), resumed)
    assert min(losses(resumed.history)) == 13


def run_cli(program: str, config: dict, tmp_path: Path, server: S3Server) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{program}.yaml"
    path.write_text(yaml.safe_dump(config))
    termination = tmp_path / f"{program}.termination"
    termination.touch()
    result = subprocess.run([str(BIN / program), "--config", str(path)], capture_output=True, text=True,
                            timeout=300, env=workload_env(server, LLMOPS_TERMINATION_LOG=str(termination)))
    assert termination.read_text() and termination.read_text() in result.stderr, "the cause reaches the operator"
    return result


def test_a_missing_bucket_fails_with_exit_78_naming_it(s3_dataset: str, s3_server: S3Server,
                                                       tmp_path: Path) -> None:
    absent = "s3://no-such-bucket-llmops/datasets/shakespeare"
    config = run_config(absent, f"s3://{s3_dataset.split('/')[2]}/runs/x", maxSteps=8).to_wire()
    result = run_cli("llmops-pretrain", config, tmp_path, s3_server)
    assert result.returncode == exit_codes.CONFIG_ERROR, result.stderr
    assert f"bucket 'no-such-bucket-llmops' of {absent} does not exist" in result.stderr

    config = run_config(s3_dataset, "s3://no-such-bucket-llmops/runs/x", maxSteps=8).to_wire()
    result = run_cli("llmops-pretrain", config, tmp_path, s3_server)  # the output's bucket, before any training
    assert result.returncode == exit_codes.CONFIG_ERROR, result.stderr
    assert "bucket 'no-such-bucket-llmops' of s3://no-such-bucket-llmops/runs/x does not exist" in result.stderr
    assert '"step"' not in result.stdout


def test_a_missing_object_fails_with_exit_78_naming_it(s3_bucket: str, s3_server: S3Server, tmp_path: Path) -> None:
    storage.upload_dir(Path(__file__).parent.parent / "data", f"s3://{s3_bucket}/data", last="instructions.jsonl")
    base = f"s3://{s3_bucket}/models/never-trained"
    config = {"baseUri": base, "dataUri": f"s3://{s3_bucket}/data/instructions.jsonl",
              "outputUri": f"s3://{s3_bucket}/runs/ft", "method": "lora",
              "training": {"maxSteps": 4, "schedule": {"warmupSteps": 1}}}
    result = run_cli("llmops-finetune", config, tmp_path, s3_server)
    assert result.returncode == exit_codes.CONFIG_ERROR, result.stderr
    assert f"base model: no object at {base}" in result.stderr

    missing = f"s3://{s3_bucket}/data/absent.jsonl"
    config = {"modelUri": base, "outputUri": f"s3://{s3_bucket}/evals/e",
              "tasks": [{"name": "mc", "type": "multipleChoice", "dataUri": missing}]}
    result = run_cli("llmops-evaluate", config, tmp_path, s3_server)
    assert result.returncode == exit_codes.CONFIG_ERROR, result.stderr
    assert f"task 'mc' data: no object at {missing}" in result.stderr


@pytest.mark.parametrize("where", ["store", "local"])
def test_a_checkpoint_without_its_meta_json_is_incomplete_and_never_resumed_from(
        where: str, s3_bucket: str, tmp_path: Path) -> None:
    root = f"s3://{s3_bucket}/runs/partial/checkpoints" if where == "store" else str(tmp_path / "checkpoints")
    whole, cut = tmp_path / "whole", tmp_path / "cut"  # as an upload (or a crash) leaves them
    for directory in (whole, cut):
        directory.mkdir()
        (directory / "rng-0.pt").write_bytes(b"state")
    (whole / "meta.json").write_text('{"step": 5}')
    storage.upload_dir(whole, layout.join(root, "step-00000005"), last="meta.json")
    if where == "store":
        storage.upload_files(cut, layout.join(root, "step-00000010"))  # meta.json never arrived
    else:
        shutil.copytree(cut, Path(root) / "step-00000010")  # meta.json deleted first, by a prune cut short
    assert Checkpointer(root, keep_last=2).complete() == ["step-00000005"]
