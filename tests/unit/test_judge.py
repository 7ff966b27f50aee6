"""An Evaluation's judge: a reward model that decides winRate tasks. Admission, reconcile, the counting of wins
and the rows a judged task accepts (the judge's own scoring runs in tests/integration/test_reward.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from llmops.operator.api.admission import AdmissionError, admit, parse
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import evaluation
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.evaluate import EvalJobConfig
from llmops.trainer.evaluate import tasks
from llmops.trainer.evaluate.judge import win_rate
from tests.conftest import DELETE, example, patched

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(artifact_root="pvc://artifacts", trainer_image="trainer:1")
WIN_RATE_TASK = {"name": "versus", "type": "winRate", "uri": "./data/answers.jsonl", "maxNewTokens": 8}


def judged_evaluation(**spec: Any) -> dict[str, Any]:
    """The lifecycle example's Evaluation with a winRate task judged by the FineTune `rm`."""
    tasks_ = [*example("Evaluation")["spec"]["tasks"], WIN_RATE_TASK]
    return patched(example("Evaluation"), {"metadata": {"namespace": "team", "uid": "u", "generation": 1},
                                           "spec": {"tasks": tasks_, "judge": {"fineTune": "rm"}, **spec}})


def succeeded(uri: str, job: str) -> dict[str, Any]:
    return {"status": {"phase": "Succeeded", "artifactUri": uri, "jobName": job}}


class TestAdmission:
    def test_a_judge_of_a_win_rate_task_against_a_baseline_is_admitted(self) -> None:
        assert admit(judged_evaluation())["spec"]["judge"] == {"fineTune": "rm"}

    def test_a_judge_without_a_win_rate_task_is_rejected_saying_the_fix(self) -> None:
        manifest = patched(judged_evaluation(), {"spec": {"tasks": example("Evaluation")["spec"]["tasks"]}})
        with pytest.raises(AdmissionError) as caught:
            admit(manifest)
        assert [v.path for v in caught.value.violations] == ["spec.judge"]
        assert "add a task of type winRate" in str(caught.value) and "remove spec.judge" in str(caught.value)

    def test_a_judge_of_an_endpoint_is_rejected_like_a_baseline(self) -> None:
        manifest = patched(judged_evaluation(), {"spec": {
            "model": {"fineTune": DELETE, "endpoint": {"url": "http://canary:8000", "model": "tiny"}},
            "baseline": DELETE, "tasks": [{"name": "answers", "type": "exactMatch", "uri": "/d.jsonl"}],
            "thresholds": []}})
        with pytest.raises(AdmissionError) as caught:
            admit(manifest)
        assert "spec.judge" in [v.path for v in caught.value.violations]
        assert "endpoint" in str(caught.value)

    def test_the_judge_is_one_model_reference(self) -> None:
        with pytest.raises(AdmissionError, match="set exactly one of pretrainJob, fineTune or uri"):
            admit(judged_evaluation(judge={"fineTune": "rm", "uri": "s3://b/rm"}))

    def test_the_workload_config_takes_a_judge_only_for_win_rate_tasks(self) -> None:
        config = {"modelUri": "/m", "outputUri": "/out", "judgeUri": "/rm",
                  "tasks": [{"name": "qa", "type": "exactMatch", "dataUri": "/d"}]}
        with pytest.raises(ValidationError, match="judgeUri: judgeUri judges winRate tasks only"):
            EvalJobConfig.model_validate(config)
        config["tasks"] = [{"name": "qa", "type": "winRate", "dataUri": "/d"}]
        assert EvalJobConfig.model_validate({**config, "baselineUri": "/b"}).judge_uri == "/rm"


class TestReconcile:
    REFS: dict[tuple[str, str], Any] = {
        ("FineTune", "tiny-shakespeare-lora"): succeeded("s3://b/m", "lora-1"),
        ("PretrainJob", "tiny-shakespeare"): succeeded("s3://b/base", "base-1"),
        ("Dataset", "shakespeare"): succeeded("s3://b/d", "data-1")}

    def test_the_judge_is_referenced_waited_for_then_passed_to_the_workload(self) -> None:
        ev = parse(judged_evaluation())
        assert ("FineTune", "rm") in evaluation.references(ev)
        refs = {**self.REFS, ("FineTune", "rm"): {"status": {"phase": "Running"}}}
        waiting = reconcile(evaluation, ev, {}, refs, SETTINGS, NOW)
        assert waiting.children == [] and waiting.status["waitingFor"] == "FineTune rm"

        refs[("FineTune", "rm")] = succeeded("s3://b/rm/model", "rm-finetune-1")
        decision = reconcile(evaluation, ev, {}, refs, SETTINGS, NOW)
        config = json.loads(decision.children[0]["data"]["config.json"])
        assert config["judgeUri"] == "s3://b/rm/model" and config["baselineUri"] == "s3://b/base"
        judge_input = next(i for i in decision.status["inputs"] if i["name"] == "rm")
        assert {"kind": "FineTune", "run": "rm-finetune-1", "artifactUri": "s3://b/rm/model"}.items() \
            <= judge_input.items()

    def test_a_failed_judge_fails_the_evaluation_naming_it(self) -> None:
        ev = parse(judged_evaluation())
        failed = {"status": {"phase": "Failed", "conditions": [{"type": "Failed", "status": "True",
                                                                "message": "out of memory"}]}}
        decision = reconcile(evaluation, ev, {}, {**self.REFS, ("FineTune", "rm"): failed}, SETTINGS, NOW)
        assert decision.status["phase"] == "Failed" and decision.children == []
        reason = next(c for c in decision.status["conditions"] if c["type"] == "Failed")
        assert reason["message"] == "FineTune rm failed: out of memory"

    def test_a_judge_given_by_uri_waits_for_nothing(self) -> None:
        ev = parse(judged_evaluation(judge={"uri": "s3://models/rm"}))
        assert ("FineTune", "rm") not in evaluation.references(ev)
        config = json.loads(reconcile(evaluation, ev, {}, self.REFS, SETTINGS, NOW).children[0]["data"]["config.json"])
        assert config["judgeUri"] == "s3://models/rm"

    def test_without_a_judge_the_workload_gets_none(self) -> None:
        ev = parse(patched(judged_evaluation(), {"spec": {"judge": DELETE}}))
        config = json.loads(reconcile(evaluation, ev, {}, self.REFS, SETTINGS, NOW).children[0]["data"]["config.json"])
        assert "judgeUri" not in config


class TestWinRate:
    def test_each_prompt_counts_one_for_a_win_and_half_for_a_tie(self) -> None:
        ours, theirs = ["a", "b", "c", "d"], ["x", "y", "z", "w"]
        assert win_rate([2.0, 0.0, 1.0, 5.0], [1.0, 3.0, 1.0, 4.0], ours, theirs) == (1 + 0 + 0.5 + 1) / 4

    def test_the_same_answer_is_a_tie_whatever_its_two_rewards(self) -> None:
        assert win_rate([0.30000001], [0.3], ["same"], ["same"]) == 0.5


class TestJudgedRows:
    @pytest.mark.parametrize(("row", "problem"), [
        ({"question": "Who wrote Hamlet?"}, None),  # references are optional when a judge decides
        ({"prompt": "Name the prince.", "answers": ["Hamlet"]}, None),
        ({"answer": "Shakespeare"}, "no question"),
        ({"question": "Who?", "answer": 5}, "answer must be a string or a list of strings"),  # given, so checked
    ])
    def test_a_judged_row_needs_a_question_and_only_well_formed_references(self, row: dict, problem: str | None
                                                                         ) -> None:
        assert tasks.judged_problem(row) == problem

    def test_an_unjudged_row_still_needs_its_references(self) -> None:
        assert tasks.exact_match_problem({"question": "Who wrote Hamlet?"}) == \
            "answer must be a string or a list of strings"
