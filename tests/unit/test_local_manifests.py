"""Loading manifests for a local run: admission, every problem of the set at once, relative URIs resolved next
to the manifest file, local inputs that must exist, and pvc:// refused with the way out."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.operator.local.manifests import DEFAULT_NAMESPACE, ManifestError, load
from tests.conftest import EXAMPLES, example, patched


def write(path: Path, *manifests: dict[str, Any]) -> Path:
    """`manifests` as one YAML file at `path` (its folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"prompt": "a", "response": "b"}\n')
    return path


def finetune(uri: str, **spec: Any) -> dict[str, Any]:
    return patched(example("FineTune"), {"spec": {"data": {"uri": uri}, **spec}})


def problem(paths: list[Path]) -> str:
    with pytest.raises(ManifestError) as error:
        load(paths)
    return str(error.value)


class TestTheExamples:
    def test_the_lifecycle_examples_load_as_they_are(self) -> None:
        loaded = load([EXAMPLES])
        assert [item.title for item in loaded] == [  # in file order
            "Dataset/shakespeare", "PretrainJob/tiny-shakespeare", "FineTune/tiny-shakespeare-lora",
            "Evaluation/tiny-shakespeare-lora", "FineTune/tiny-shakespeare-int8", "Evaluation/tiny-shakespeare-int8",
            "Deployment/tiny-shakespeare"]
        assert all(item.resource.metadata.namespace == DEFAULT_NAMESPACE for item in loaded)
        assert loaded[2].file == EXAMPLES / "03-finetune.yaml"

    def test_same_name_in_different_kinds_is_fine(self) -> None:
        titles = {item.title for item in load([EXAMPLES])}
        assert {"FineTune/tiny-shakespeare-lora", "Evaluation/tiny-shakespeare-lora"} <= titles


class TestRelativeUris:
    @pytest.mark.parametrize("uri", ["./data/x.jsonl", "data/x.jsonl"])
    def test_relative_uri_becomes_the_absolute_path_next_to_the_manifest_file(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
        manifest = write(tmp_path / "stages" / "finetune.yaml", finetune(uri))
        data = touch(tmp_path / "stages" / "data" / "x.jsonl")
        monkeypatch.chdir(tmp_path)  # not next to the working directory: tmp_path/data does not exist
        (loaded,) = load([tmp_path])
        assert loaded.file == manifest
        assert loaded.resource.spec.data.uri == str(data)
        assert Path(loaded.resource.spec.data.uri).is_absolute()

    def test_relative_uri_in_a_list_is_resolved_too(self, tmp_path: Path) -> None:
        tasks = example("Evaluation")["spec"]["tasks"]
        write(tmp_path / "eval" / "evaluation.yaml", example("Evaluation"))
        data = tmp_path / "eval" / "data" / "multiple-choice.jsonl"
        for task in tasks:
            if "uri" in task:
                touch(tmp_path / "eval" / task["uri"])
        (loaded,) = load([tmp_path / "eval" / "evaluation.yaml"])
        assert tasks[1]["uri"] == "./data/multiple-choice.jsonl"
        assert loaded.resource.spec.tasks[1].uri == str(data)

    def test_an_absolute_path_stays_as_it_is(self, tmp_path: Path) -> None:
        data = touch(tmp_path / "elsewhere" / "x.jsonl")
        write(tmp_path / "stages" / "finetune.yaml", finetune(str(data)))
        (loaded,) = load([tmp_path / "stages"])
        assert loaded.resource.spec.data.uri == str(data)

    def test_a_file_uri_becomes_a_plain_path(self, tmp_path: Path) -> None:
        data = touch(tmp_path / "x.jsonl")
        write(tmp_path / "finetune.yaml", finetune(f"file://{data}"))
        (loaded,) = load([tmp_path])
        assert loaded.resource.spec.data.uri == str(data)

    @pytest.mark.parametrize("uri", ["s3://bucket/instructions.jsonl", "gs://bucket/instructions.jsonl"])
    def test_fsspec_uris_are_left_alone(self, tmp_path: Path, uri: str) -> None:
        write(tmp_path / "finetune.yaml", finetune(uri))
        (loaded,) = load([tmp_path])
        assert loaded.resource.spec.data.uri == uri

    def test_builtin_uris_are_left_alone(self, tmp_path: Path) -> None:
        write(tmp_path / "dataset.yaml", example("Dataset"))
        (loaded,) = load([tmp_path])
        assert loaded.resource.spec.sources[0].uri == "builtin://shakespeare"


class TestLocalInputs:
    def test_a_missing_local_input_names_file_resource_field_and_the_path_looked_for(self, tmp_path: Path) -> None:
        manifest = write(tmp_path / "stages" / "finetune.yaml", finetune("./data/x.jsonl"))
        message = problem([tmp_path])
        assert str(manifest) in message
        assert "FineTune/tiny-shakespeare-lora" in message
        assert "spec.data.uri" in message
        assert "./data/x.jsonl does not exist" in message
        assert str(tmp_path / "stages" / "data" / "x.jsonl") in message  # where it was looked for

    def test_a_missing_input_deep_in_a_list_names_its_index(self, tmp_path: Path) -> None:
        write(tmp_path / "evaluation.yaml", example("Evaluation"))
        message = problem([tmp_path])
        assert "Evaluation/tiny-shakespeare-lora" in message and "spec.tasks[1].uri" in message

    def test_an_output_uri_that_does_not_exist_yet_is_fine(self, tmp_path: Path) -> None:
        touch(tmp_path / "data" / "x.jsonl")
        write(tmp_path / "finetune.yaml", finetune("./data/x.jsonl", output={"uri": "./out/model"}))
        (loaded,) = load([tmp_path])
        assert not (tmp_path / "out").exists()
        assert loaded.resource.spec.output.uri == str(tmp_path / "out" / "model")


class TestPvcIsRefused:
    @pytest.mark.parametrize(("patch", "field"), [
        ({"data": {"uri": "pvc://claim/x.jsonl"}}, "spec.data.uri"),
        ({"data": {"uri": "s3://b/x.jsonl"}, "output": {"uri": "pvc://claim/out"}}, "spec.output.uri"),
    ], ids=["input", "output"])
    def test_pvc_is_refused_naming_the_field_and_the_way_out(self, tmp_path: Path, patch: dict[str, Any],
                                                           field: str) -> None:
        manifest = write(tmp_path / "finetune.yaml", patched(example("FineTune"), {"spec": patch}))
        message = problem([tmp_path])
        assert f"{manifest}: FineTune/tiny-shakespeare-lora: {field}: pvc://claim/" in message
        assert "PersistentVolumeClaim" in message
        assert "local path" in message and "s3://" in message  # the way out


class TestInvalidManifests:
    def test_an_invalid_manifest_reports_file_and_field(self, tmp_path: Path) -> None:
        bad = patched(example("PretrainJob"), {"spec": {"training": {"maxSteps": 10, "schedule": {"warmupSteps": 10}}}})
        manifest = write(tmp_path / "pretrain.yaml", bad)
        message = problem([tmp_path])
        assert message.startswith(f"{manifest}: PretrainJob 'tiny-shakespeare' is invalid")
        assert "spec.training.schedule.warmupSteps" in message

    def test_all_problems_of_the_set_are_reported_together(self, tmp_path: Path) -> None:
        bad = patched(example("PretrainJob"), {"spec": {"training": {"maxSteps": 10, "schedule": {"warmupSteps": 20}}}})
        first = write(tmp_path / "a-pretrain.yaml", bad)
        second = write(tmp_path / "b-finetune.yaml", finetune("./missing.jsonl"))
        third = write(tmp_path / "c-dataset.yaml", patched(example("Dataset"), {"spec": {"unknownField": 1}}))
        write(tmp_path / "d-deployment.yaml", example("Deployment"))
        message = problem([tmp_path])
        assert str(first) in message and "spec.training.schedule.warmupSteps" in message
        assert str(second) in message and "spec.data.uri" in message
        assert str(third) in message and "unknownField" in message
        assert "d-deployment.yaml" not in message

    def test_a_file_with_several_documents_reports_each_bad_one(self, tmp_path: Path) -> None:
        write(tmp_path / "all.yaml", finetune("./one.jsonl"),
              patched(finetune("./two.jsonl"), {"metadata": {"name": "other"}}))
        message = problem([tmp_path])
        assert "FineTune/tiny-shakespeare-lora: spec.data.uri: ./one.jsonl" in message
        assert "FineTune/other: spec.data.uri: ./two.jsonl" in message

    def test_an_unknown_kind_is_reported(self, tmp_path: Path) -> None:
        write(tmp_path / "x.yaml", patched(example("Dataset"), {"kind": "Pipeline"}))
        assert "apiVersion/kind" in problem([tmp_path])

    def test_a_duplicate_kind_and_name_is_reported(self, tmp_path: Path) -> None:
        write(tmp_path / "a.yaml", example("Dataset"))
        again = write(tmp_path / "b.yaml", patched(example("Dataset"), {"spec": {"execution": {"workers": 2}}}))
        message = problem([tmp_path])
        assert f"{again}: Dataset/shakespeare is given twice" in message

    def test_the_same_file_given_twice_is_a_duplicate(self, tmp_path: Path) -> None:
        manifest = write(tmp_path / "dataset.yaml", example("Dataset"))
        assert "Dataset/shakespeare is given twice" in problem([manifest, manifest])


class TestPaths:
    def test_a_path_that_does_not_exist_is_reported(self, tmp_path: Path) -> None:
        write(tmp_path / "dataset.yaml", example("Dataset"))
        missing = tmp_path / "nope"
        assert problem([tmp_path, missing]) == f"{missing}: no such file or directory"

    def test_a_folder_without_manifests_is_reported(self, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("nothing here")
        assert "no manifests found" in problem([tmp_path])

    def test_files_and_folders_may_be_mixed_and_folders_are_read_recursively(self, tmp_path: Path) -> None:
        shutil.copytree(EXAMPLES, tmp_path / "lifecycle")
        extra = write(tmp_path / "more" / "other.yaml", patched(example("Dataset"), {"metadata": {"name": "other"}}))
        loaded = load([tmp_path / "lifecycle", extra])
        assert len(loaded) == 8 and loaded[-1].title == "Dataset/other"
        assert loaded[2].resource.spec.data.uri == str(tmp_path / "lifecycle" / "data" / "instructions.jsonl")

    @pytest.mark.parametrize("text", ["apiVersion: llmops.dev/v1alpha1\nkind: Dataset\nmetadata:\nspec: {}\n",
                                      "- not\n- a manifest\n"], ids=["empty-metadata", "a-list"])
    def test_a_document_that_is_not_a_manifest_is_reported_naming_its_file(self, tmp_path: Path, text: str) -> None:
        (tmp_path / "odd.yaml").write_text(text)
        assert str(tmp_path / "odd.yaml") in problem([tmp_path])
