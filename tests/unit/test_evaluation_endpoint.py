"""Evaluating a live endpoint: the config rules, admission of an Evaluation of an endpoint, its children, and
the pure pieces of scoring over HTTP (offsets, text pieces, perplexity windows)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from llmops.operator.api.admission import AdmissionError, admit, parse
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import evaluation
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.evaluate import EndpointConfig, EvalJobConfig, TaskRun, api_base_url
from llmops.trainer.evaluate.endpoint import (
    ScoredText,
    UnsupportedTask,
    _Logprobs,
    check_tasks,
    rolling_windows,
    scored_text,
    text_pieces,
    word_starts,
)
from tests.conftest import DELETE, example, patched

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(artifact_root="pvc://artifacts", trainer_image="trainer:1")
TASKS = [{"name": "heldout", "type": "perplexity", "dataUri": "/data/text.jsonl"}]
ENDPOINT = {"url": "http://canary.team.svc:8000", "model": "tiny"}


def job_config(**fields: Any) -> EvalJobConfig:
    return EvalJobConfig.model_validate({"outputUri": "/out", "tasks": TASKS, **fields})


class TestEvalJobConfig:
    @pytest.mark.parametrize("fields", [{}, {"modelUri": "/models/tiny", "endpoint": ENDPOINT}],
                             ids=["neither", "both"])
    def test_exactly_one_of_model_uri_and_endpoint(self, fields: dict[str, Any]) -> None:
        with pytest.raises(ValidationError) as caught:
            job_config(**fields)
        assert "modelUri" in str(caught.value) and "endpoint" in str(caught.value)

    @pytest.mark.parametrize("fields", [{"modelUri": "/models/tiny"}, {"endpoint": ENDPOINT}])
    def test_either_alone_is_valid(self, fields: dict[str, Any]) -> None:
        assert job_config(**fields).tasks[0].name == "heldout"

    def test_an_endpoint_takes_no_baseline_model(self) -> None:
        with pytest.raises(ValidationError, match="baselineUri: .*absolute thresholds"):
            job_config(endpoint=ENDPOINT, baselineUri="/models/base")

    @pytest.mark.parametrize(("given", "want"), [
        ("http://canary:8000", "http://canary:8000/v1"),
        ("http://canary:8000/", "http://canary:8000/v1"),
        ("http://canary:8000/v1", "http://canary:8000/v1"),
        ("https://gateway.example/team/tiny/v1/", "https://gateway.example/team/tiny/v1"),
    ])
    def test_the_url_is_normalised_to_the_api_root(self, given: str, want: str) -> None:
        assert api_base_url(given) == want
        assert job_config(endpoint={**ENDPOINT, "url": given}).endpoint.url == want

    @pytest.mark.parametrize(("field", "value"), [
        ("url", "canary:8000"), ("apiKeyEnv", "NOT-A-NAME"), ("concurrency", 0), ("timeoutSeconds", 0),
    ])
    def test_bad_endpoint_fields_are_rejected_by_name(self, field: str, value: Any) -> None:
        with pytest.raises(ValidationError) as caught:
            EndpointConfig.model_validate({**ENDPOINT, field: value})
        assert field in str(caught.value)

    def test_wire_names_are_camel_case(self) -> None:
        wire = job_config(endpoint={**ENDPOINT, "apiKeyEnv": "KEY", "documentPrefix": "<|endoftext|>"}).to_wire()
        assert "modelUri" not in wire
        assert wire["endpoint"] == {"url": "http://canary.team.svc:8000/v1", "model": "tiny", "apiKeyEnv": "KEY",
                                    "documentPrefix": "<|endoftext|>", "timeoutSeconds": 120.0, "concurrency": 4}


@pytest.mark.parametrize(("task_type", "want"), [
    ("classification", "classification head"), ("winRate", "baseline model"), ("lmEval", "lm-evaluation-harness"),
])
def test_tasks_an_endpoint_cannot_answer_fail_naming_the_task_and_why(task_type: str, want: str) -> None:
    extra = {"lmEvalTask": "arc_easy"} if task_type == "lmEval" else {}
    task = TaskRun.model_validate({"name": "t1", "type": task_type, "dataUri": "/d", **extra})
    with pytest.raises(UnsupportedTask) as caught:
        check_tasks([TaskRun.model_validate(TASKS[0]), task])
    assert "task 't1'" in str(caught.value) and want in str(caught.value)


def endpoint_evaluation(**model: Any) -> dict[str, Any]:
    return patched(example("Evaluation"), {
        "metadata": {"namespace": "team", "uid": "u", "generation": 1},
        "spec": {"model": {"fineTune": DELETE, "endpoint": {**ENDPOINT, **model}}, "baseline": DELETE}})


class TestEvaluationOfAnEndpoint:
    def test_an_endpoint_is_admitted_in_place_of_a_trained_model(self) -> None:
        stored = admit(endpoint_evaluation(apiKeySecret={"name": "canary-key", "key": "token"}))
        assert stored["spec"]["model"]["endpoint"]["model"] == "tiny"

    @pytest.mark.parametrize(("patch", "want_path"), [
        ({"spec": {"model": {"fineTune": "tiny-shakespeare-lora"}}}, "spec.model"),
        ({"spec": {"baseline": {"uri": "s3://b/base"}}}, "spec.baseline"),
        ({"spec": {"tasks": [{"name": "sentiment", "type": "classification", "uri": "/d.jsonl"}],
                   "thresholds": []}}, "spec.tasks"),
    ], ids=["endpoint-and-fine-tune", "endpoint-with-baseline", "endpoint-classification"])
    def test_combinations_an_endpoint_cannot_serve_are_rejected(self, patch: dict, want_path: str) -> None:
        with pytest.raises(AdmissionError) as caught:
            admit(patched(endpoint_evaluation(), patch))
        assert want_path in [v.path for v in caught.value.violations], caught.value

    def test_children_score_the_endpoint_without_waiting_for_a_model(self) -> None:
        ev = parse(endpoint_evaluation(apiKeySecret={"name": "canary-key", "key": "token"}))
        # Only the task's Dataset is referenced: no FineTune, no PretrainJob.
        assert evaluation.references(ev) == [("Dataset", "shakespeare")]
        decision = reconcile(evaluation, ev, {}, {("Dataset", "shakespeare"): succeeded("s3://b/d")}, SETTINGS, NOW)
        config_map, job = decision.children
        config = json.loads(config_map["data"]["config.json"])
        assert "modelUri" not in config
        assert config["endpoint"] == {"url": "http://canary.team.svc:8000/v1", "model": "tiny",
                                      "apiKeyEnv": evaluation.API_KEY_ENV, "documentPrefix": "",
                                      "timeoutSeconds": 120.0, "concurrency": 4}
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["llmops-evaluate"]
        assert {"name": evaluation.API_KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": "canary-key", "key": "token"}}} in container["env"]
        assert "canary-key" not in config_map["data"]["config.json"]  # the key stays in its Secret
        assert decision.status["phase"] != "Waiting" and "waitingFor" not in decision.status
        assert decision.status["modelUri"] == "http://canary.team.svc:8000/v1"

    def test_an_endpoint_without_a_key_gets_no_key_variable(self) -> None:
        ev = parse(endpoint_evaluation())
        decision = reconcile(evaluation, ev, {}, {("Dataset", "shakespeare"): succeeded("s3://b/d")}, SETTINGS, NOW)
        config = json.loads(decision.children[0]["data"]["config.json"])
        assert "apiKeyEnv" not in config["endpoint"]
        (container,) = decision.children[1]["spec"]["template"]["spec"]["containers"]
        assert all(e["name"] != evaluation.API_KEY_ENV for e in container.get("env", []))


def succeeded(uri: str) -> dict[str, Any]:
    return {"status": {"phase": "Succeeded", "artifactUri": uri}}


class TestOffsets:
    def test_offsets_that_index_the_prompt_are_kept(self) -> None:
        scored = scored_text("To be", _Logprobs(tokens=["To", " be"], token_logprobs=[None, -1.5],
                                                text_offset=[0, 2]))
        assert scored == ScoredText(starts=[0, 2], logprobs=[None, -1.5])
        assert scored.region(2) == [-1.5]

    def test_a_start_token_the_server_added_is_placed_before_the_prompt(self) -> None:
        # vLLM adds each token's text on its own, a Llama start token's "<s>" included.
        scored = scored_text("To be", _Logprobs(tokens=["<s>", "To", " be"], token_logprobs=[None, -2.0, -1.5],
                                                text_offset=[0, 3, 5]))
        assert scored.starts == [-3, 0, 2]
        assert scored.region(0) == [-2.0, -1.5]


def test_text_pieces_fit_the_budget_and_are_cut_before_spaces() -> None:
    text = "Now is the winter of our discontent — made glorious summer by this sun of York"
    pieces = text_pieces(text, 20)
    assert "".join(text[b:e] for b, e in pieces) == text
    assert all(len(text[b:e].encode()) <= 20 for b, e in pieces)
    assert all(text[b] == " " for b, _ in pieces[1:])


def local_windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(first token held, first token scored, end) of each window of `scoring.rolling_loglikelihood`, read off
    its loop: tokens = [prefix, t0, ..., t(n-1)]; a window holds tokens[start..end], scores tokens[done+1..end]."""
    out, done = [], 0
    while done < n:
        end = min(n, context if done == 0 else done + stride)
        start = max(0, end - context)
        out.append((max(0, start - 1), done, end))
        done = end
    return out


@pytest.mark.parametrize(("n", "context", "stride"), [(10, 16, 8), (300, 64, 32), (300, 64, 64), (129, 128, 7)])
def test_windows_over_cuttable_tokens_are_the_local_scorers_windows(n: int, context: int, stride: int) -> None:
    bounds = [3 * i for i in range(n + 1)]  # every token may be cut at
    windows = rolling_windows(bounds, [True] * (n + 1), context, stride)
    assert [(w.begin // 3, w.scored // 3, w.end // 3) for w in windows] == local_windows(n, context, stride)
    assert windows[0].after_prefix and not any(w.after_prefix for w in windows[1:])


def test_windows_cut_only_at_word_starts_score_every_token_once_within_the_context() -> None:
    text = " ".join(["Shakespeare", "wrote", "plays"] * 40)
    starts = [i for i, c in enumerate(text) if i == 0 or c == " " or (text[i - 1] != " " and i % 4 == 0)]
    cuttable = word_starts(text, starts)
    assert cuttable[-1] and cuttable[0] and not all(cuttable)
    windows = rolling_windows(starts + [len(text)], cuttable, 16, 8)
    scored = [(w.scored, w.end) for w in windows]
    assert scored[0][0] == 0 and scored[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(scored))  # adjacent: each token scored exactly once
    for w in windows:
        held = [s for s in starts if w.begin <= s < w.end]
        assert len(held) <= 16 + 1  # the window's tokens and the one it predicts last
        assert w.begin in (0, len(text)) or text[w.begin] == " "
