"""The evaluation workload: metrics that mean what they say, thresholds, verdict, bad input."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmops.operator.reconcile.progress import parse_progress
from llmops.trainer.config import exit_codes
from llmops.trainer.config.evaluate import EvalJobConfig
from llmops.trainer.config.model import ModelConfig
from llmops.trainer.evaluate.lm_eval_tasks import write_task
from llmops.trainer.evaluate.run import evaluate
from llmops.trainer.train.export import export, wrap_tokenizer
from llmops.trainer.train.model import build_model, to_huggingface

BIN = Path(sys.executable).parent
TEXT = ("Now is the winter of our discontent made glorious summer by this sun of York and all the clouds "
        "that lowered upon our house in the deep bosom of the ocean buried")


@pytest.fixture(scope="module")
def memorizer(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained until it has memorised TEXT (scored after an end-of-text token)."""
    tokenizer = wrap_tokenizer(dataset / "tokenizer.json", "<|endoftext|>")
    ids = [tokenizer.eos_token_id, *tokenizer(TEXT, add_special_tokens=False)["input_ids"]]
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=4, context_length=128),
                        len(tokenizer), tokenizer.eos_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = torch.tensor([ids])
    for _ in range(150):
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp("memorizer") / "model"
    export(to_huggingface(model), tokenizer, out, summary={}, history=[], lineage={})
    return out


def job(model: Path, output: Path, tasks: list[dict[str, Any]], **extra: Any) -> EvalJobConfig:
    return EvalJobConfig.model_validate({"modelUri": str(model), "outputUri": str(output), "tasks": tasks,
                                         **extra})


def test_perplexity_is_near_one_on_memorised_text_and_high_on_shuffled(memorizer: Path, tmp_path: Path) -> None:
    (tmp_path / "seen.txt").write_text(TEXT)
    words = TEXT.split()
    random.Random(0).shuffle(words)
    (tmp_path / "shuffled.txt").write_text(" ".join(words))
    document = evaluate(job(memorizer, tmp_path / "out", [
        {"name": "seen", "type": "perplexity", "dataUri": str(tmp_path / "seen.txt")},
        {"name": "shuffled", "type": "perplexity", "dataUri": str(tmp_path / "shuffled.txt")}]))
    metrics = {t: r["metrics"] for t, r in document["tasks"].items()}
    assert metrics["seen"]["perplexity"] < 1.5
    assert metrics["shuffled"]["perplexity"] > 20
    assert metrics["seen"]["bits_per_byte"] < metrics["shuffled"]["bits_per_byte"]


def test_a_sliding_window_scores_every_token_of_a_long_document_once(memorizer: Path, tmp_path: Path) -> None:
    from llmops.trainer.evaluate.scoring import rolling_loglikelihood

    model = AutoModelForCausalLM.from_pretrained(memorizer).eval()
    ids = list(range(5, 305))  # longer than the 128-token context
    _, scored = rolling_loglikelihood(model, ids, prefix=0, context=128, stride=50)
    assert scored == len(ids)
    whole, _ = rolling_loglikelihood(model, ids[:100], prefix=0, context=128, stride=64)
    strided, _ = rolling_loglikelihood(model, ids[:100], prefix=0, context=128, stride=7)
    assert whole == pytest.approx(strided, rel=1e-4)  # fits one window: the stride must not matter


def hand_scored(model: Any, tokenizer: Any, question: str, choices: list[str]) -> list[float]:
    """log p(choice | prompt), one forward pass per choice (an independent check of the batched scorer)."""
    context = tokenizer(f"Question: {question}\nAnswer:", add_special_tokens=False)["input_ids"]
    scores = []
    for choice in choices:
        cont = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + cont])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        scores.append(sum(logprobs[len(context) - 1 + i, t].item() for i, t in enumerate(cont)))
    return scores


def test_acc_and_acc_norm_match_a_hand_computation(base_model: Path, tmp_path: Path) -> None:
    rows = [{"question": "Who wrote Hamlet?", "choices": ["Shakespeare", "Marlowe", "a cat"], "answer": 0},
            {"question": "Which king?", "choices": ["Lear", "Richard the Third", "Nobody"], "answer": 1},
            {"question": "Where is Elsinore?", "choices": ["Denmark", "Rome"], "answer": 1}]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    document = evaluate(job(base_model, tmp_path / "out", [{"name": "mc", "type": "multipleChoice",
                                                            "dataUri": str(data)}]))
    model = AutoModelForCausalLM.from_pretrained(base_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    acc = acc_norm = 0
    for row in rows:
        scores = hand_scored(model, tokenizer, row["question"], row["choices"])
        acc += scores.index(max(scores)) == row["answer"]
        normed = [s / len(c) for s, c in zip(scores, row["choices"], strict=True)]
        acc_norm += normed.index(max(normed)) == row["answer"]
    assert document["tasks"]["mc"]["metrics"] == pytest.approx({"acc": acc / 3, "acc_norm": acc_norm / 3})


def test_cli_writes_results_with_the_verdict_and_skips_bad_rows(base_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(base_model, model)
    lines = ['{"question": "Who wrote Hamlet?", "choices": ["Shakespeare", "Marlowe"], "answer": 0}',
             "{broken", '{"question": "One choice?", "choices": ["only"], "answer": 0}',
             '{"question": "Out of range?", "choices": ["a", "b"], "answer": 5}',
             '{"question": "Which play has a ghost?", "choices": ["Hamlet", "Twelfth Night"], "answer": 0}']
    (tmp_path / "mc.jsonl").write_text("\n".join(lines) + "\n")
    config = {"modelUri": str(model), "outputUri": str(tmp_path / "out"), "name": "gate",
              "tasks": [{"name": "mc", "type": "multipleChoice", "dataUri": str(tmp_path / "mc.jsonl")}],
              "thresholds": [{"task": "mc", "metric": "acc", "min": 0.0},
                             {"task": "mc", "metric": "acc_norm", "max": -1.0}]}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(BIN / "llmops-evaluate"), "--config", str(path)], capture_output=True, text=True)
    assert result.returncode == exit_codes.SUCCESS, result.stderr  # a Failed verdict is a result, not an error
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["verdict"] == "Failed"
    assert [r["passed"] for r in document["results"]] == [True, False]
    task = document["tasks"]["mc"]
    assert task["examples"] == 2 and task["skippedRows"] == [
        "line 2: bad JSON (Expecting property name enclosed in double quotes)",
        "line 3: needs at least two choices, has 1", "line 4: answer 5 is not an index into 2 choices"]
    assert "## Evaluation gate: Failed" in (model / "model-card.md").read_text()
    # The operator reads these lines from the pod's log into the Evaluation's status.
    report = parse_progress(result.stdout, "Evaluation", "job")
    assert report is not None and report.progress.percent == "100%" and report.progress.unit == "tasks"

    again = subprocess.run([str(BIN / "llmops-evaluate"), "--config", str(path)], capture_output=True, text=True)
    assert again.returncode == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"] == document["results"]


def test_a_task_without_valid_rows_and_a_broken_model_fail_clearly(base_model: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    config = {"modelUri": str(base_model), "outputUri": str(tmp_path / "out"),
              "tasks": [{"name": "mc", "type": "multipleChoice", "dataUri": str(tmp_path / "bad.jsonl")}]}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(BIN / "llmops-evaluate"), "--config", str(path)], capture_output=True, text=True)
    assert result.returncode == exit_codes.CONFIG_ERROR
    assert "task 'mc': no valid rows" in result.stderr and "line 1: needs at least two choices" in result.stderr

    broken = tmp_path / "broken"
    shutil.copytree(base_model, broken)
    (broken / "model.safetensors").unlink()
    config["modelUri"] = str(broken)
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(BIN / "llmops-evaluate"), "--config", str(path)], capture_output=True, text=True)
    assert result.returncode == exit_codes.CONFIG_ERROR and "model.safetensors" in result.stderr


def test_exact_match_f1_and_win_rate_against_a_baseline(base_model: Path, memorizer: Path, tmp_path: Path) -> None:
    rows = [{"question": "Who wrote Hamlet?", "answer": "Shakespeare"},
            {"question": "Name the prince.", "answers": ["Hamlet", "the prince of Denmark"]}]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    document = evaluate(job(base_model, tmp_path / "out", [
        {"name": "qa", "type": "exactMatch", "dataUri": str(data), "maxNewTokens": 8},
        {"name": "versus", "type": "winRate", "dataUri": str(data), "maxNewTokens": 8}],
        baselineUri=str(memorizer),
        thresholds=[{"task": "qa", "metric": "f1", "relativeTo": "baseline", "tolerance": 1.0}]))
    qa, versus = document["tasks"]["qa"]["metrics"], document["tasks"]["versus"]["metrics"]
    assert 0.0 <= qa["exact_match"] <= qa["f1"] <= 1.0
    assert 0.0 <= versus["win_rate"] <= 1.0
    (f1_result,) = [r for r in document["results"] if r.get("threshold")]
    assert f1_result["passed"] is True and "baselineValue" in f1_result  # within 1.0 of the baseline's F1




def test_results_agree_with_lm_evaluation_harness(base_model: Path, tmp_path: Path) -> None:
    rows = [{"question": "Who wrote Hamlet?", "choices": ["Shakespeare", "Marlowe", "a cat"], "answer": 0},
            {"question": "Which king?", "choices": ["Lear", "Richard the Third", "Nobody"], "answer": 1},
            {"question": "Where is Elsinore?", "choices": ["Denmark", "Rome"], "answer": 1}]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    long_text = " ".join([TEXT] * 6)  # longer than the 128-token context: several windows
    (tmp_path / "text.jsonl").write_text(json.dumps({"text": long_text}) + "\n" + json.dumps({"text": TEXT}) + "\n")
    tasks_dir = tmp_path / "lm_eval_tasks"
    write_task(tasks_dir, "tiny_mc", tmp_path / "mc.jsonl", "multipleChoice")
    write_task(tasks_dir, "tiny_text", tmp_path / "text.jsonl", "perplexity")

    document = evaluate(job(base_model, tmp_path / "out", [
        {"name": "ours-mc", "type": "multipleChoice", "dataUri": str(tmp_path / "mc.jsonl")},
        {"name": "ours-text", "type": "perplexity", "dataUri": str(tmp_path / "text.jsonl"), "stride": 128},
        {"name": "their-mc", "type": "lmEval", "lmEvalTask": "tiny_mc", "dataUri": str(tasks_dir)},
        {"name": "their-text", "type": "lmEval", "lmEvalTask": "tiny_text", "dataUri": str(tasks_dir)}]))
    metrics = {name: report["metrics"] for name, report in document["tasks"].items()}
    assert metrics["ours-mc"]["acc"] == metrics["their-mc"]["acc"]
    assert metrics["ours-mc"]["acc_norm"] == metrics["their-mc"]["acc_norm"]
    # Disjoint windows (stride = context), as lm-eval's rolling log-likelihood uses.
    assert metrics["ours-text"]["bits_per_byte"] == pytest.approx(metrics["their-text"]["bits_per_byte"], abs=1e-4)
