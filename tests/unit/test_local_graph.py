"""The order of a local run: each resource after what it references; dangling references and cycles are
reported before anything runs."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.operator.local.graph import ordered, references, upstream
from llmops.operator.local.manifests import Loaded, ManifestError, load
from tests.conftest import DELETE, EXAMPLES, example, lora_deployment, patched

LIFECYCLE = ["Dataset/shakespeare", "PretrainJob/tiny-shakespeare", "FineTune/tiny-shakespeare-lora",
             "FineTune/tiny-shakespeare-int8", "Evaluation/tiny-shakespeare-int8", "Evaluation/tiny-shakespeare-lora",
             "Deployment/tiny-shakespeare"]


def loaded(tmp_path: Path, *manifests: dict[str, Any]) -> list[Loaded]:
    """The manifests as Loaded, each from a file of its own in tmp_path (local data copied next to them)."""
    shutil.copytree(EXAMPLES / "data", tmp_path / "data", dirs_exist_ok=True)
    paths = []
    for index, manifest in enumerate(manifests):
        path = tmp_path / f"{index:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        paths.append(path)
    return load(paths)


def lifecycle(tmp_path: Path) -> list[Loaded]:
    return loaded(tmp_path, *(yaml.safe_load(path.read_text()) for path in sorted(EXAMPLES.glob("*.yaml"))))



def finetune(name: str, base: dict[str, str]) -> dict[str, Any]:
    return patched(example("FineTune"), {"metadata": {"name": name}, "spec": {
        "base": {"pretrainJob": DELETE, **base}, "data": {"uri": "s3://bucket/instructions.jsonl"}}})


def titles(items: list[Loaded]) -> list[str]:
    return [item.title for item in items]


def problem(items: list[Loaded]) -> str:
    with pytest.raises(ManifestError) as error:
        ordered(items)
    return str(error.value)


class TestOrder:
    @pytest.mark.parametrize("seed", range(5))
    def test_each_resource_comes_after_what_it_references(self, tmp_path: Path, seed: int) -> None:
        items = lifecycle(tmp_path)
        random.Random(seed).shuffle(items)
        assert titles(ordered(items)) == LIFECYCLE

    def test_reversed_input_comes_out_in_lifecycle_order(self, tmp_path: Path) -> None:
        assert titles(ordered(lifecycle(tmp_path)[::-1])) == LIFECYCLE

    def test_resources_ready_together_come_in_lifecycle_order_of_kinds_then_by_name(self, tmp_path: Path) -> None:
        items = loaded(
            tmp_path,
            finetune("from-a-path", {"uri": "s3://bucket/model"}),
            patched(example("Dataset"), {"metadata": {"name": "zeta"}}),
            patched(example("PretrainJob"), {"metadata": {"name": "from-s3"}, "spec": {"data": {
                "dataset": DELETE, "uri": "s3://bucket/tokens"}}}),
            patched(example("Dataset"), {"metadata": {"name": "alpha"}}))
        assert titles(ordered(items)) == ["Dataset/alpha", "Dataset/zeta", "PretrainJob/from-s3",
                                          "FineTune/from-a-path"]

    def test_a_chain_of_fine_tunes_runs_base_first(self, tmp_path: Path) -> None:
        items = loaded(tmp_path, finetune("second", {"fineTune": "first"}), finetune("first", {"uri": "s3://b/m"}))
        assert titles(ordered(items)) == ["FineTune/first", "FineTune/second"]

    def test_an_empty_set_has_an_empty_order(self) -> None:
        assert ordered([]) == []

    def test_references_and_upstream_name_what_a_resource_waits_for(self, tmp_path: Path) -> None:
        items = lifecycle(tmp_path)
        evaluation = next(item for item in items if item.resource.kind == "Evaluation")
        assert references(evaluation) == [("FineTune", "tiny-shakespeare-lora"), ("PretrainJob", "tiny-shakespeare"),
                                          ("Dataset", "shakespeare")]  # model, baseline, a task's Dataset
        assert titles(upstream(evaluation, items)) == ["FineTune/tiny-shakespeare-lora", "PretrainJob/tiny-shakespeare",
                                                       "Dataset/shakespeare"]


class TestDanglingReferences:
    def test_a_reference_outside_the_set_names_the_file_the_resource_and_what_is_missing(
            self, tmp_path: Path) -> None:
        (item,) = loaded(tmp_path, example("PretrainJob"))
        message = problem([item])
        assert message.startswith(f"{item.file}: PretrainJob/tiny-shakespeare references Dataset shakespeare, "
                                  "which is not among the manifests given")
        assert "add its manifest" in message

    def test_every_dangling_reference_is_reported_together(self, tmp_path: Path) -> None:
        items = loaded(tmp_path, example("Evaluation"), lora_deployment())
        message = problem(items)
        assert "Evaluation/tiny-shakespeare-lora references FineTune tiny-shakespeare-lora" in message
        assert "Evaluation/tiny-shakespeare-lora references Dataset shakespeare" in message
        assert "Evaluation/tiny-shakespeare-lora references PretrainJob tiny-shakespeare" in message  # its baseline
        assert "Deployment/tiny-shakespeare references FineTune tiny-shakespeare-lora" in message
        # the Deployment's gate is in the set, so it is not reported
        assert "references Evaluation" not in message
        assert len(message.splitlines()) == 4

    def test_a_same_named_resource_of_another_kind_does_not_satisfy_a_reference(self, tmp_path: Path) -> None:
        # The Evaluation is named like the FineTune it scores; without the FineTune the reference dangles.
        dataset = example("Dataset")
        evaluation = patched(example("Evaluation"), {"spec": {"model": {"fineTune": "shakespeare"}}})
        message = problem(loaded(tmp_path, dataset, evaluation))
        assert "references FineTune shakespeare" in message


class TestCycles:
    def test_two_fine_tunes_based_on_each_other_are_a_cycle_naming_both(self, tmp_path: Path) -> None:
        items = loaded(tmp_path, finetune("a", {"fineTune": "b"}), finetune("b", {"fineTune": "a"}))
        message = problem(items)
        assert "cycle" in message
        assert "FineTune/a" in message and "FineTune/b" in message

    def test_a_fine_tune_based_on_itself_is_a_cycle(self, tmp_path: Path) -> None:
        message = problem(loaded(tmp_path, finetune("a", {"fineTune": "a"})))
        assert "cycle" in message and "FineTune/a -> FineTune/a" in message

    def test_a_cycle_beside_resources_that_could_run_is_still_refused(self, tmp_path: Path) -> None:
        items = [*lifecycle(tmp_path / "lifecycle"),
                 *loaded(tmp_path / "loop", finetune("a", {"fineTune": "b"}), finetune("b", {"fineTune": "a"}))]
        assert "cycle" in problem(items)

    def test_dangling_references_are_reported_before_cycles(self, tmp_path: Path) -> None:
        loop = loaded(tmp_path, finetune("a", {"fineTune": "b"}), finetune("b", {"fineTune": "a"}),
                      patched(finetune("c", {"fineTune": "a"}), {"spec": {"data": {"uri": DELETE,
                                                                                     "dataset": "nowhere"}}}))
        message = problem(loop)
        assert "references Dataset nowhere" in message and "cycle" not in message
