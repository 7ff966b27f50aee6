"""examples/workloads/: one runnable config per workload CLI, each valid for the model its CLI reads, wired into
a chain (each stage reads what the one before wrote), and the data one run end to end."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from llmops.trainer.config import layout
from llmops.trainer.config.artifacts import ArtifactCleanupConfig
from llmops.trainer.config.data import DataJobConfig
from llmops.trainer.config.evaluate import EvalJobConfig
from llmops.trainer.config.files import ConfigFileError, load_config
from llmops.trainer.config.finetune import FineTuneRunConfig
from llmops.trainer.config.manifest import DatasetManifest
from llmops.trainer.config.serve import ServerConfig
from llmops.trainer.config.training import PretrainRunConfig
from tests.conftest import ROOT

WORKLOADS = ROOT / "examples" / "workloads"
BIN = Path(sys.executable).parent

EXAMPLES: dict[str, tuple[str, type[BaseModel]]] = {
    "llmops-data": ("data.yaml", DataJobConfig),
    "llmops-pretrain": ("pretrain.yaml", PretrainRunConfig),
    "llmops-finetune": ("finetune.yaml", FineTuneRunConfig),
    "llmops-evaluate": ("evaluate.yaml", EvalJobConfig),
    "llmops-serve": ("serve.yaml", ServerConfig),
    "llmops-artifacts": ("artifacts.yaml", ArtifactCleanupConfig),
}
"""Each workload CLI, its example and the config model that CLI validates `--config` with."""


def example(cli: str) -> BaseModel:
    name, model = EXAMPLES[cli]
    return load_config(model, WORKLOADS / name)


def test_every_workload_cli_has_exactly_one_example() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(EXAMPLES) == {name for name in scripts if name.startswith("llmops-")}
    assert sorted(p.name for p in WORKLOADS.glob("*.yaml")) == sorted(name for name, _ in EXAMPLES.values())


@pytest.mark.parametrize("cli", EXAMPLES)
def test_each_example_is_valid_for_its_cli_and_says_how_to_run_it(cli: str) -> None:
    name, model = EXAMPLES[cli]
    assert isinstance(example(cli), model)
    assert f".venv/bin/{cli} " in (WORKLOADS / name).read_text()  # the command line, in the file's header


def test_the_examples_form_a_chain_each_stage_reading_what_the_one_before_wrote() -> None:
    data, pretrain, finetune = example("llmops-data"), example("llmops-pretrain"), example("llmops-finetune")
    evaluation, cleanup = example("llmops-evaluate"), example("llmops-artifacts")
    assert pretrain.data_uri == data.output_uri
    assert finetune.base_uri == layout.model_uri(pretrain.output_uri)
    assert evaluation.model_uri == layout.model_uri(finetune.output_uri)
    assert evaluation.baseline_uri == layout.model_uri(pretrain.output_uri)
    assert [t.data_uri for t in evaluation.tasks if t.type == "perplexity"] == [data.output_uri]
    assert f"--model {evaluation.model_uri} " in (WORKLOADS / "serve.yaml").read_text()
    outputs = {data.output_uri, pretrain.output_uri, finetune.output_uri, evaluation.output_uri}
    assert set(cleanup.uris) == outputs
    # Files the examples read from the repository (they run from its root).
    for path in [finetune.data_uri] + [t.data_uri for t in evaluation.tasks if t.data_uri not in outputs]:
        assert (ROOT / path).is_file(), path


def test_the_data_config_takes_workers_at_the_top_level_not_a_datasets_execution(tmp_path: Path) -> None:
    """What the data workload reads is the pipeline part of a Dataset's spec plus outputUri and workers; the
    spec's `execution` (and image, output, backoffLimit) belong to the operator."""
    wire = yaml.safe_load((WORKLOADS / "data.yaml").read_text())
    assert DataJobConfig.model_validate(wire).workers == 1
    wire.pop("workers")
    (tmp_path / "dataset-spec.yaml").write_text(yaml.safe_dump({**wire, "execution": {"workers": 2}}))
    with pytest.raises(ConfigFileError, match="execution") as caught:
        load_config(DataJobConfig, tmp_path / "dataset-spec.yaml")
    assert "Extra inputs are not permitted" in str(caught.value)


@pytest.mark.slow
def test_the_data_example_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    result = subprocess.run([str(BIN / "llmops-data"), "--config", str(WORKLOADS / "data.yaml"), "--engine", "inline",
                             "--output", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = DatasetManifest.read(DatasetManifest.path(out))
    assert manifest.counts.kept > 0 and manifest.tokens.train > 0 and manifest.tokens.validation > 0
    assert manifest.tokenizer.vocab_size == 512
    assert (out / layout.TOKENIZER_FILE).is_file() and (out / layout.SHARDS_DIR / layout.SHARD_INDEX_FILE).is_file()
    assert f"-> {out}" in result.stderr
