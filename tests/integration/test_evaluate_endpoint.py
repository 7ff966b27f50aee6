"""Scoring a live endpoint over real HTTP: the server's echo/logprobs equal transformers' log-softmax, and
`llmops-evaluate` against `llmops-serve` measures what it measures from the same model's directory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmops.trainer.config import exit_codes
from llmops.trainer.config.evaluate import EndpointConfig
from llmops.trainer.evaluate.endpoint import WINDOW_RESERVE, EndpointModel
from llmops.trainer.evaluate.run import LocalModel
from tests.integration.conftest import BIN
from tests.integration.test_serve import KEY, NAME, ServerProcess

CONTEXT = 128  # the base model's
LIMITS = {"maxPromptTokens": CONTEXT, "maxNewTokens": 32, "maxBatchSize": 8,
          "maxConcurrentRequests": 2}  # below the evaluation's concurrency: some requests get 429 and retry
PROMPT = "Good my lord, what is the matter with you? Speak, é"
SPEECH = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and "
          "arrows of outrageous fortune, or to take arms against a sea of troubles, and by opposing end them. "
          "To die, to sleep, no more; and by a sleep to say we end the heart-ache and the thousand natural shocks "
          "that flesh is heir to: 'tis a consummation devoutly to be wished.")


@pytest.fixture(scope="module")
def server(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = ServerProcess([str(BIN / "llmops-serve"), "--model", str(base_model)],
                            tmp_path_factory.mktemp("serve"), LIMITS, api_key=KEY)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hf(base_model: Path) -> tuple[Any, Any]:
    return AutoModelForCausalLM.from_pretrained(base_model).eval(), AutoTokenizer.from_pretrained(base_model)


def complete(server: ServerProcess, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/completions", json={"model": NAME, **body},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def log_softmax(hf: tuple[Any, Any], ids: list[int]) -> torch.Tensor:
    """log p(next token | ids[:i+1]) at every position i, by transformers."""
    with torch.no_grad():
        return torch.log_softmax(hf[0](input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


@pytest.mark.slow
def test_echo_returns_every_prompt_tokens_log_softmax_top_alternatives_and_offsets(
        server: ServerProcess, hf: tuple[Any, Any]) -> None:
    ids = hf[1](PROMPT)["input_ids"]
    answer = complete(server, prompt=PROMPT, echo=True, max_tokens=0, logprobs=5)
    assert answer.status_code == 200, answer.text
    (choice,) = answer.json()["choices"]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "length"
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(ids) and logprobs["token_logprobs"][0] is None
    assert logprobs["top_logprobs"][0] is None  # nothing predicts the first token
    want = log_softmax(hf, ids)
    for i in range(1, len(ids)):
        assert logprobs["token_logprobs"][i] == pytest.approx(want[i - 1, ids[i]].item(), abs=1e-4)
        # The chosen token and the 5 most likely (fewer keys when one of them is the chosen token).
        top = sorted(logprobs["top_logprobs"][i].values(), reverse=True)
        assert len(top) in (5, 6) and top[0] == pytest.approx(want[i - 1].max().item(), abs=1e-4)
    # Offsets index the echoed text: each token starts where the text before it ends.
    assert "".join(logprobs["tokens"]) == PROMPT
    assert logprobs["text_offset"] == [len("".join(logprobs["tokens"][:i])) for i in range(len(ids))]


@pytest.mark.slow
def test_generated_tokens_carry_their_log_probabilities_and_greedy_output_is_unchanged(
        server: ServerProcess, hf: tuple[Any, Any]) -> None:
    ids = hf[1](PROMPT)["input_ids"]
    plain = complete(server, prompt=PROMPT, max_tokens=12, temperature=0, return_token_ids=True).json()
    answer = complete(server, prompt=PROMPT, max_tokens=12, temperature=0, return_token_ids=True, echo=True,
                      logprobs=2).json()
    (choice,) = answer["choices"]
    generated = choice["token_ids"]
    assert generated == plain["choices"][0]["token_ids"]  # asking for logprobs changes no token
    assert choice["text"] == PROMPT + plain["choices"][0]["text"]
    logprobs = choice["logprobs"]
    want = log_softmax(hf, ids + generated)
    every = ids + generated
    assert len(logprobs["token_logprobs"]) == len(every)
    for i in range(1, len(every)):
        assert logprobs["token_logprobs"][i] == pytest.approx(want[i - 1, every[i]].item(), abs=1e-4)
    assert logprobs["text_offset"][len(ids)] == len(PROMPT)  # the completion starts after the echoed prompt


@pytest.mark.slow
@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", {"prompt": "x", "echo": True, "max_tokens": 0, "logprobs": 6}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "logprobs": 1, "stream": True}, "stream"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "echo": True}, "echo"),
])
def test_combinations_the_server_cannot_answer_get_a_400_naming_the_field(
        server: ServerProcess, path: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{server.url}{path}", json={"model": NAME, **body},
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and param in error["message"]


def write_tasks(directory: Path) -> list[dict[str, Any]]:
    """A small perplexity task (documents within the context), a multipleChoice and an exactMatch task."""
    texts = [SPEECH[:200], SPEECH[200:], "Who's there? Nay, answer me: stand, and unfold yourself."]
    (directory / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    rows = [{"question": "Who wrote Hamlet?", "choices": ["Shakespeare", "Marlowe", "a cat"], "answer": 0},
            {"question": "Which king?", "choices": ["Lear", "Richard the Third", "Nobody"], "answer": 1},
            {"question": "Where is Elsinore?", "choices": ["Denmark", "Rome"], "answer": 1},
            {"question": "What is the question?", "choices": ["to be", "or not to be"], "answer": 0}]
    (directory / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    qa = [{"question": "Who wrote Hamlet?", "answer": "Shakespeare"},
          {"question": "Name the prince.", "answers": ["Hamlet", "the prince of Denmark"]}]
    (directory / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    return [{"name": "heldout", "type": "perplexity", "dataUri": str(directory / "text.jsonl")},
            {"name": "who", "type": "multipleChoice", "dataUri": str(directory / "mc.jsonl"), "numFewshot": 1},
            {"name": "qa", "type": "exactMatch", "dataUri": str(directory / "qa.jsonl"), "maxNewTokens": 8}]


def run_evaluate(config: dict[str, Any], directory: Path, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
    path = directory / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([str(BIN / "llmops-evaluate"), "--config", str(path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def metric(server: ServerProcess, name: str, labels: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_an_endpoint_scores_what_its_model_directory_scores(server: ServerProcess, base_model: Path,
                                                            tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path)
    thresholds = [{"task": "heldout", "metric": "perplexity", "max": 1e9}, {"task": "who", "metric": "acc", "min": 0}]
    endpoint = {"url": server.url, "model": NAME, "apiKeyEnv": "CANARY_KEY", "concurrency": 4,
                "documentPrefix": "<|endoftext|>"}  # the local scorer scores a document after this token
    over_http = run_evaluate({"endpoint": endpoint, "outputUri": str(tmp_path / "http"), "name": "canary",
                              "tasks": tasks, "thresholds": thresholds}, tmp_path, env={"CANARY_KEY": KEY})
    assert over_http.returncode == exit_codes.SUCCESS, over_http.stderr
    loaded = run_evaluate({"modelUri": str(base_model), "outputUri": str(tmp_path / "local"), "tasks": tasks,
                           "thresholds": thresholds}, tmp_path)
    assert loaded.returncode == exit_codes.SUCCESS, loaded.stderr

    http_doc = json.loads((tmp_path / "http" / "results.json").read_text())
    local_doc = json.loads((tmp_path / "local" / "results.json").read_text())
    assert http_doc["model"] == f"{server.url}/v1" and http_doc["verdict"] == local_doc["verdict"] == "Passed"
    for name in ("heldout", "who", "qa"):
        measured, want = http_doc["tasks"][name]["metrics"], local_doc["tasks"][name]["metrics"]
        assert measured.keys() == want.keys()
        assert measured == pytest.approx(want, abs=1e-4), name
    assert http_doc["tasks"]["heldout"]["metrics"]["perplexity"] > 1.0  # a real measurement, not a default
    # The server's limit of 2 requests in flight turned some of the 4 concurrent ones away; they were retried.
    assert metric(server, "llmops_serve_requests_total", '{code="429",route="/v1/completions"}') > 0


@pytest.mark.slow
def test_continuation_log_likelihoods_equal_the_local_scorers(server: ServerProcess, hf: tuple[Any, Any]) -> None:
    context = "Question: Who wrote Hamlet?\nAnswer: Shakespeare\n\nQuestion: Which king?\nAnswer:"
    requests = [(context, " Lear"), (context, " Richard the Third"), (context, " Nobody"), ("To be", ", or not")]
    endpoint = EndpointModel(EndpointConfig(url=server.url, model=NAME, api_key_env="CANARY_KEY"),
                             environ={"CANARY_KEY": KEY})
    assert endpoint.loglikelihoods(requests) == pytest.approx(LocalModel(*hf).loglikelihoods(requests), abs=1e-4)


@pytest.mark.slow
def test_a_document_longer_than_the_context_is_scored_in_windows_each_token_once(
        server: ServerProcess, hf: tuple[Any, Any]) -> None:
    document = " ".join([SPEECH] * 3)
    tokens = len(hf[1](document)["input_ids"])
    assert tokens > 2 * CONTEXT
    endpoint = EndpointModel(EndpointConfig(url=server.url, model=NAME, api_key_env="CANARY_KEY",
                                            document_prefix="<|endoftext|>"), environ={"CANARY_KEY": KEY})
    assert endpoint.context == CONTEXT  # from /v1/models: the longest prompt the server takes
    ((total, scored),) = endpoint.rolling([document], None)
    assert scored == tokens
    # The local scorer with the same window (the server's context less the token each window predicts last
    # and room for a start token): windows over the endpoint are cut only between words, so each window holds
    # up to a word less context, which moves the log-likelihood very little (2e-5 of it when measured).
    window = CONTEXT - WINDOW_RESERVE
    ((local, local_scored),) = LocalModel(*hf).rolling([document], window // 2)
    assert local_scored == tokens and total == pytest.approx(local, rel=1e-3)


@pytest.mark.slow
def test_a_task_an_endpoint_cannot_score_fails_as_a_config_error_before_any_request(tmp_path: Path) -> None:
    (tmp_path / "labels.jsonl").write_text(json.dumps({"text": "a fine play", "label": "good"}) + "\n")
    config = {"endpoint": {"url": "http://127.0.0.1:9/v1", "model": NAME}, "outputUri": str(tmp_path / "out"),
              "tasks": [{"name": "sentiment", "type": "classification", "dataUri": str(tmp_path / "labels.jsonl")}]}
    result = run_evaluate(config, tmp_path)
    assert result.returncode == exit_codes.CONFIG_ERROR
    assert "task 'sentiment': type classification cannot be scored over an endpoint" in result.stderr


@pytest.mark.slow
def test_a_wrong_model_name_or_key_fails_as_a_config_error(server: ServerProcess, tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path)[:1]
    wrong_model = run_evaluate({"endpoint": {"url": server.url, "model": "gpt-4", "apiKeyEnv": "CANARY_KEY"},
                                "outputUri": str(tmp_path / "a"), "tasks": tasks}, tmp_path, env={"CANARY_KEY": KEY})
    assert wrong_model.returncode == exit_codes.CONFIG_ERROR
    assert f"endpoint.model 'gpt-4' is not served at {server.url}/v1; it serves {NAME}" in wrong_model.stderr
    wrong_key = run_evaluate({"endpoint": {"url": server.url, "model": NAME, "apiKeyEnv": "CANARY_KEY"},
                              "outputUri": str(tmp_path / "b"), "tasks": tasks}, tmp_path,
                             env={"CANARY_KEY": "sk-wrong"})
    assert wrong_key.returncode == exit_codes.CONFIG_ERROR and "answered 401" in wrong_key.stderr
