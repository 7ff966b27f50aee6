"""Offline admission (`llmops validate`) accepts the examples and rejects every bad manifest by field."""

from __future__ import annotations

import pytest

from llmops.operator.api.admission import AdmissionError, admit, parse
from tests.bad_manifests import BAD_CASES, BadCase
from tests.conftest import DELETE, example, patched

KINDS = ["Dataset", "PretrainJob", "FineTune", "Evaluation", "Deployment"]


@pytest.mark.parametrize("kind", KINDS)
def test_examples_are_admitted_and_parse_into_models(kind: str) -> None:
    resource = parse(example(kind))
    assert resource.kind == kind
    assert resource.metadata.name == example(kind)["metadata"]["name"]


def test_admission_fills_in_schema_defaults_like_the_api_server() -> None:
    stored = admit(example("Deployment"))
    assert stored["spec"]["server"]["port"] == 8000
    assert stored["spec"]["server"]["limits"]["maxBatchSize"] == 32
    assert stored["spec"]["canary"]["steps"][0]["weight"] == 10
    assert stored["spec"]["revisionHistoryLimit"] == 5
    # The user's values stay.
    assert stored["spec"]["server"]["limits"]["maxPromptTokens"] == 512


def test_defaults_nested_in_a_defaulted_object_are_filled_too() -> None:
    stored = admit(example("FineTune"))
    # `training.optimizer` came from the user without beta1; the schema default fills it.
    assert stored["spec"]["training"]["optimizer"]["beta1"] == 0.9
    assert stored["spec"]["checkpoint"] == {"intervalSteps": 500, "keepLast": 2, "onPreemption": True}


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_bad_manifest_is_rejected_naming_the_field(case: BadCase) -> None:
    with pytest.raises(AdmissionError) as caught:
        admit(case.manifest())
    assert case.want_path in str(caught.value)


def test_wrong_api_version_is_rejected() -> None:
    manifest = patched(example("Dataset"), {"apiVersion": "llmops.dev/v1"})
    with pytest.raises(AdmissionError, match="expected apiVersion llmops.dev/v1alpha1"):
        admit(manifest)


def test_rejection_says_what_would_be_right() -> None:
    manifest = patched(example("Deployment"), {"spec": {"canary": {"steps": [{"weight": 50}, {"weight": 10}]}}})
    with pytest.raises(AdmissionError) as caught:
        admit(manifest)
    assert "must increase strictly" in str(caught.value)
    assert "e.g. 10, 50, 100" in str(caught.value)


class TestTransitionRules:
    """Rules with oldSelf run on update only: the model shape is fixed once training started."""

    def test_changing_the_model_shape_is_rejected(self) -> None:
        old = admit(example("PretrainJob"))
        new = patched(old, {"spec": {"model": {"numLayers": 8}}})
        with pytest.raises(AdmissionError) as caught:
            admit(new, old=old)
        assert [v.path for v in caught.value.violations] == ["spec.model"]
        assert "cannot change after creation" in str(caught.value)

    def test_changing_a_mutable_field_is_allowed(self) -> None:
        old = admit(example("PretrainJob"))
        new = patched(old, {"spec": {"training": {"maxSteps": 400}, "backoffLimit": 5}})
        assert admit(new, old=old)["spec"]["training"]["maxSteps"] == 400

    def test_changing_the_fine_tune_method_is_rejected(self) -> None:
        old = admit(example("FineTune"))
        new = patched(old, {"spec": {"method": "sft", "lora": DELETE}})
        with pytest.raises(AdmissionError, match="method cannot change"):
            admit(new, old=old)

    def test_on_create_transition_rules_are_skipped(self) -> None:
        admit(example("PretrainJob"))  # no oldSelf: must not fail


def test_a_null_takes_the_default_where_there_is_one_and_is_rejected_elsewhere() -> None:
    # As the API server does: nulls are pruned only for fields with a default.
    stored = admit(patched(example("Deployment"), {"spec": {"replicas": None}}))
    assert stored["spec"]["replicas"] == 1
    with pytest.raises(AdmissionError, match="spec.data.dataset"):
        admit(patched(example("PretrainJob"), {"spec": {"data": {"dataset": None, "uri": "s3://b/x"}}}))
