"""Sizing, specialisation and compression through `llmops run`, as a user runs them on tiny data: a PretrainJob
that chooses its shape from a budget, its continuation at twice the context, a distilled student, a pruned and an
int8 model, a reward model judging an Evaluation of the int8 model against its original, and the int8 model
served once that gate passed (manifests next to this file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_local_lifecycle import llmops

FOLDER = Path(__file__).parent / "specialization"

pytestmark = pytest.mark.slow


def status(store: Path, kind: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((store / "resources" / kind.lower() / f"{name}.yaml").read_text())["status"]


def model_config(store: Path, kind: str, name: str) -> dict[str, Any]:
    return json.loads((Path(status(store, kind, name)["artifactUri"]) / "config.json").read_text())


def test_size_continue_distill_prune_quantize_judge_and_serve(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = llmops("run", "-f", FOLDER, "--store", store, timeout=1500)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output

    # The shape the budget bought is the one trained, and status says what it cost.
    sizing = status(store, "PretrainJob", "spec-sized")["sizing"]
    sized = model_config(store, "PretrainJob", "spec-sized")
    assert sizing["chosen"] and (sized["hidden_size"], sized["num_hidden_layers"]) == (
        sizing["hiddenSize"], sizing["numLayers"])
    assert status(store, "PretrainJob", "spec-sized")["metrics"]["step"] == sizing["steps"]

    # Continued at twice the context, from the sized model's weights and shape.
    continued = model_config(store, "PretrainJob", "spec-continued")
    assert continued["max_position_embeddings"] == 128 and continued["hidden_size"] == sized["hidden_size"]
    lineage = json.loads((Path(status(store, "PretrainJob", "spec-continued")["artifactUri"]) / "lineage.json")
                         .read_text())
    assert lineage["parent"] == "PretrainJob/spec-sized"

    # The student has the smaller shape; the pruned model one layer; the int8 model its scheme on its card.
    assert model_config(store, "FineTune", "spec-student")["hidden_size"] == 32
    assert model_config(store, "FineTune", "spec-pruned")["num_hidden_layers"] == 1
    int8 = Path(status(store, "FineTune", "spec-int8")["artifactUri"])
    assert model_config(store, "FineTune", "spec-int8")["quantization_config"]["quant_method"] == "compressed-tensors"
    card = (int8 / "model-card.md").read_text()
    assert "int8" in card and str(Path(status(store, "PretrainJob", "spec-sized")["artifactUri"])) in card
    assert model_config(store, "FineTune", "spec-reward")["architectures"] == ["LlamaForSequenceClassification"]

    # The gate compared the int8 model with its original, and the reward model judged the win rate.
    evaluation = status(store, "Evaluation", "spec-int8")
    assert evaluation["verdict"] == "Passed"
    results = {(r["task"], r["metric"]): r for r in evaluation["results"]}
    heldout = results[("heldout", "perplexity")]
    assert heldout["baselineValue"] and abs(heldout["value"] - heldout["baselineValue"]) <= 1.2
    assert 0 <= results[("judged", "win_rate")]["value"] <= 1
    report = json.loads(Path(evaluation["artifactUri"]).read_text())
    assert "judge" in json.dumps(report)

    # Served only after that gate: the int8 model answered a completion.
    assert "serving 'spec-int8' at http://127.0.0.1:" in output
    completion = next(line for line in output.splitlines() if "/v1/completions" in line)
    assert "-> ''" not in completion, completion
