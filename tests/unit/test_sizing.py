"""Compute-optimal sizing: a PretrainJob's computeBudget chooses the shape and the tokens (C = 6ND, D ~ 20N),
shows them in status, and warns when the Dataset is smaller than the budget's tokens."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from llmops.operator.api.admission import parse
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import pretrainjob
from llmops.trainer.config.model import ModelConfig
from llmops.trainer.config.sizing import ASPECT_RANGE, choose_shape, optimal_parameters, size_run
from llmops.trainer.config.training import ComputeBudget
from tests.conftest import DELETE, example, patched
from tests.unit.test_reconcile import NOW, SETTINGS

VOCAB = 2048


@pytest.mark.parametrize("flops", [1e14, 1e16, 1e18, 1e20])
def test_the_chosen_shape_has_about_the_compute_optimal_parameters(flops: float) -> None:
    budget = ComputeBudget(flops=flops, choose_shape=True)
    shape = choose_shape(budget, ModelConfig(context_length=512), VOCAB)
    target = optimal_parameters(budget)
    assert target == pytest.approx(math.sqrt(flops / 120))
    # Within 30% of N: shapes come in steps (whole layers, 64-wide heads), but the nearest one is taken.
    assert shape.parameter_count(VOCAB) == pytest.approx(target, rel=0.3)
    assert ASPECT_RANGE[0] <= shape.hidden_size / shape.num_layers <= ASPECT_RANGE[1]
    assert shape.head_dim == 64 and shape.context_length == 512  # the template's other fields are kept


def test_a_larger_budget_buys_a_larger_model_and_more_tokens() -> None:
    small, large = (size_run(ComputeBudget(flops=f, choose_shape=True), ModelConfig(), VOCAB, 4096)[1]
                    for f in (1e16, 1e18))
    assert large.parameters > small.parameters and large.tokens > small.tokens
    # Both near 20 tokens per parameter, and the whole budget is spent: 6 N D ~ C.
    for sized, flops in ((small, 1e16), (large, 1e18)):
        assert 12 < sized.tokens_per_parameter < 30
        assert 6 * sized.parameters * sized.tokens == pytest.approx(flops, rel=0.01)


def test_a_given_shape_only_gets_its_steps() -> None:
    model = ModelConfig(hidden_size=128, num_layers=2, num_heads=2)
    shape, sized = size_run(ComputeBudget(flops=1e15), model, VOCAB, 1024)
    assert shape == model and not sized.chosen
    assert sized.steps == int(1e15 / (6 * model.parameter_count(VOCAB) * 1024))


def test_more_tokens_than_the_dataset_holds_are_counted_as_epochs() -> None:
    _, sized = size_run(ComputeBudget(flops=1e16, choose_shape=True), ModelConfig(), VOCAB, 4096,
                        dataset_tokens=1_000_000)
    assert sized.epochs == pytest.approx(sized.tokens / 1_000_000, abs=0.01) and sized.epochs > 1


def job(**spec: Any) -> Any:
    manifest = patched(example("PretrainJob"), {"metadata": {"namespace": "team", "uid": "uid-2", "generation": 1},
                                                "spec": spec})
    return parse(manifest)


def dataset(train_tokens: int) -> dict[tuple[str, str], Any]:
    return {("Dataset", "shakespeare"): {"status": {"phase": "Succeeded", "artifactUri": "s3://b/d",
                                                    "stats": {"vocabSize": VOCAB, "trainTokens": train_tokens}}}}


def test_a_pretrainjob_that_asks_for_the_shape_trains_it_and_shows_it_in_status() -> None:
    resource = job(model=DELETE, training={"maxSteps": DELETE}, computeBudget={"flops": 1e15, "chooseShape": True})
    decision = reconcile(pretrainjob, resource, {}, dataset(10**9), SETTINGS, NOW)
    config = json.loads(decision.children[0]["data"]["config.json"])
    sizing = decision.status["sizing"]
    assert config["model"]["hiddenSize"] == sizing["hiddenSize"] and config["model"]["numLayers"] == sizing["numLayers"]
    assert config["training"]["maxSteps"] == sizing["steps"]
    assert sizing["chosen"] is True and sizing["epochs"] < 1
    assert sizing["parameters"] == ModelConfig.model_validate(config["model"]).parameter_count(VOCAB)
    assert not [e for e in decision.events if e.reason == "RepeatedData"]


def test_a_budget_larger_than_the_data_warns_once_that_the_data_repeats() -> None:
    resource = job(training={"maxSteps": DELETE}, computeBudget={"flops": 1e15, "chooseShape": True})
    decision = reconcile(pretrainjob, resource, {}, dataset(10_000), SETTINGS, NOW)
    (warning,) = [e for e in decision.events if e.reason == "RepeatedData"]
    assert warning.type == "Warning" and "lower computeBudget.flops" in warning.message
    assert decision.status["sizing"]["epochs"] > 1
    again = reconcile(pretrainjob, resource.model_copy(update={"status": type(resource).field_model("status")
                                                               .model_validate(decision.status)}),
                      {}, dataset(10_000), SETTINGS, NOW)
    assert not [e for e in again.events if e.reason == "RepeatedData"]
