"""The `llmops` command as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import EXAMPLES, ROOT, example, patched


def llmops(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("llmops", path=str(Path(sys.executable).parent))
    assert executable, "the console script `llmops` is installed with the package"
    return subprocess.run([executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_lists_the_sub_commands() -> None:
    result = llmops("--help")
    assert result.returncode == 0
    for command in ("generate", "validate", "run", "operator", "serve"):
        assert command in result.stdout


def test_validate_accepts_the_lifecycle_examples() -> None:
    result = llmops("validate", "-f", str(EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" valid") == len(list(EXAMPLES.glob("*.yaml"))) == 7


def test_validate_rejects_a_bad_manifest_naming_the_field(tmp_path: Path) -> None:
    bad = patched(example("Deployment"), {"spec": {"canary": {"steps": [{"weight": 80}, {"weight": 20}]}}})
    good = example("Dataset")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([good, bad]))
    result = llmops("validate", "-f", str(path))
    assert result.returncode == 1
    assert "Dataset/shakespeare valid" in result.stdout
    assert "spec.canary.steps: Invalid value" in result.stderr


def test_generate_check_passes_on_a_clean_tree() -> None:
    result = llmops("generate", "--check")
    assert result.returncode == 0, result.stderr


def test_run_dry_run_prints_the_plan_in_order_and_runs_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = llmops("run", "--dry-run", "-f", str(EXAMPLES), "--store", str(store))
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line[:2] in {f"{n}." for n in range(1, 10)}]
    assert [s.split()[1] for s in steps] == ["Dataset/shakespeare", "PretrainJob/tiny-shakespeare",
                                            "FineTune/tiny-shakespeare-lora", "FineTune/tiny-shakespeare-int8",
                                            "Evaluation/tiny-shakespeare-int8", "Evaluation/tiny-shakespeare-lora",
                                            "Deployment/tiny-shakespeare"]
    assert "waits for nothing; would run: process llmops-data" in steps[0]
    assert "waits for Dataset/shakespeare; would run: llmops-pretrain once Dataset shakespeare" in steps[1]
    assert "check its gate" in steps[6]
    assert not (store / "resources").exists() and not (store / "runs").exists(), "a dry run runs nothing"


def test_run_stops_before_anything_runs_when_a_manifest_is_bad(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "lifecycle")
    bad = patched(example("PretrainJob"), {"spec": {"training": {"maxSteps": 1}}})
    (tmp_path / "lifecycle" / "02-pretrainjob.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "lifecycle" / "data" / "instructions.jsonl").unlink()
    result = llmops("run", "-f", str(tmp_path / "lifecycle"), "--store", str(tmp_path / "store"))
    assert result.returncode == 1
    assert "nothing was run" in result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "02-pretrainjob.yaml" in said and "spec.training.schedule.warmupSteps" in said
    assert "03-finetune.yaml: FineTune/tiny-shakespeare-lora: spec.data.uri" in said and "does not exist" in said
    assert not (tmp_path / "store" / "runs").exists()


def test_run_curates_a_streaming_dataset_and_writes_what_the_in_memory_path_writes(tmp_path: Path) -> None:
    """`spec.execution.streaming` reaches the workload in local mode too: same kept documents and tokens."""
    outputs = {}
    for streaming in (False, True):
        manifest = patched(example("Dataset"), {"metadata": {"name": f"topics-{str(streaming).lower()}"}, "spec": {
            "sources": [{"name": "topics", "uri": "builtin://pydoc-topics"}],
            "tokenizer": {"train": {"vocabSize": 512}},
            "execution": {"streaming": {"enabled": streaming, "blockDocuments": 64, "partitions": 4}}}})
        path = tmp_path / f"dataset-{streaming}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        store = tmp_path / f"store-{streaming}"
        result = llmops("run", "-f", str(path), "--store", str(store))
        assert result.returncode == 0, result.stdout + result.stderr
        (written,) = store.rglob("manifest.json")
        outputs[streaming] = json.loads(written.read_text())
        assert outputs[streaming]["config"]["streaming"]["enabled"] is streaming
        outputs[streaming]["documents"] = written.with_name("documents.jsonl").read_text()
    plain, streamed = outputs[False], outputs[True]
    assert streamed["counts"] == plain["counts"] and streamed["tokens"] == plain["tokens"]
    assert streamed["documents"] == plain["documents"]
