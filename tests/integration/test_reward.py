"""A reward model (FineTune method reward) learns which answer is preferred, and judges winRate tasks.

One reward model is trained through the CLI for the whole module, on sums: the chosen answer states the sum,
the rejected one repeats a junk word.
"""

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
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from llmops.trainer.config import exit_codes
from llmops.trainer.config.evaluate import TaskRun
from llmops.trainer.config.finetune import FineTuneRunConfig
from llmops.trainer.evaluate.judge import load_judge
from llmops.trainer.evaluate.run import score_with
from llmops.trainer.model_files import ModelLoadError
from llmops.trainer.train.reward import reward_loss, score

BIN = Path(sys.executable).parent
JUNK = ["banana", "purple", "lorem"]


def sum_pair(a: int, b: int, rng: random.Random) -> dict[str, str]:
    return {"prompt": f"What is {a} plus {b}?", "chosen": f"{a + b}.",
            "rejected": " ".join([rng.choice(JUNK)] * rng.randint(2, 4))}


def preference_records(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [sum_pair(rng.randint(0, 50), rng.randint(0, 50), rng) for _ in range(count)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_config(base: Path, data: Path, output: Path, **extra: Any) -> FineTuneRunConfig:
    return FineTuneRunConfig.model_validate({
        "baseUri": str(base), "dataUri": str(data), "outputUri": str(output), "method": "reward",
        "data": {"validationFraction": 0.2, "maxLength": 64},
        "training": {"maxSteps": 25, "batch": {"microBatchSize": 8}, "logIntervalSteps": 5,
                     "optimizer": {"learningRate": 1e-3, "weightDecay": 0.0},
                     "schedule": {"warmupSteps": 2, "kind": "constant"}}, **extra})


@pytest.fixture(scope="module")
def trained(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """(the exported reward model, the `llmops-finetune` run that made it)."""
    work = tmp_path_factory.mktemp("reward")
    data = write_jsonl(work / "prefs.jsonl", preference_records(48, seed=0))
    config = work / "finetune.yaml"
    config.write_text(yaml.safe_dump(reward_config(base_model, data, work / "out").to_wire()))
    run = subprocess.run([str(BIN / "llmops-finetune"), "--config", str(config)], capture_output=True, text=True,
                         timeout=600)
    return work / "out" / "model", run


def pairwise_accuracy(model: Any, tokenizer: Any, records: list[dict[str, str]]) -> float:
    prompts = [r["prompt"] for r in records]
    chosen = score(model, tokenizer, prompts, [r["chosen"] for r in records], 64)
    rejected = score(model, tokenizer, prompts, [r["rejected"] for r in records], 64)
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(records)


def test_the_cli_exports_a_one_label_classifier_that_ranks_held_out_pairs(trained: tuple[Path, Any]) -> None:
    model_dir, run = trained
    assert run.returncode == exit_codes.SUCCESS, run.stderr
    assert AutoConfig.from_pretrained(model_dir).architectures == ["LlamaForSequenceClassification"]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    held_out = preference_records(24, seed=99)  # other sums than the training ones (seed 0)
    assert pairwise_accuracy(model, tokenizer, held_out) >= 0.9  # chance: 0.5
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    accuracies = [line["accuracy"] for line in lines if line.get("event") == "train" and "accuracy" in line]
    margins = [line["rewardMargin"] for line in lines if "rewardMargin" in line]
    assert accuracies[-1] >= 0.9 and margins[-1] > margins[0]  # logged as training goes


def test_the_loss_is_bradley_terry_plus_the_centring_term(base_model: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1,
                                                               pad_token_id=tokenizer.pad_token_id)
    records = preference_records(4, seed=1)
    plain = reward_config(base_model, tmp_path, tmp_path)
    centred = reward_config(base_model, tmp_path, tmp_path, reward={"centerRewardsCoefficient": 0.5})
    with torch.no_grad():
        loss, extras = reward_loss(model, records, tokenizer, plain)
        with_centring, _ = reward_loss(model, records, tokenizer, centred)
        prompts = [r["prompt"] for r in records]
        r_c = torch.tensor(score(model, tokenizer, prompts, [r["chosen"] for r in records], 64))
        r_r = torch.tensor(score(model, tokenizer, prompts, [r["rejected"] for r in records], 64))
    assert loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(r_c - r_r).mean().item(), abs=1e-5)
    assert with_centring.item() == pytest.approx(loss.item() + 0.5 * ((r_c + r_r) ** 2).mean().item(), abs=1e-5)
    assert extras == pytest.approx({"accuracy": (r_c > r_r).float().mean().item(),
                                    "rewardMargin": (r_c - r_r).mean().item()}, abs=1e-5)


def test_a_text_gets_the_same_reward_alone_and_padded_in_a_batch(trained: tuple[Path, Any]) -> None:
    judge = load_judge(str(trained[0]))
    short, long = "4.", "banana banana banana banana banana banana"
    alone = judge.rewards(["What is 2 plus 2?"], [short])
    batched = judge.rewards(["What is 2 plus 2?", "What is 2 plus 2?"], [short, long])
    assert batched[0] == pytest.approx(alone[0], abs=1e-4)  # pooled at its last real token, not at padding
    assert batched[0] != pytest.approx(batched[1], abs=1e-3)


class FixedAnswers:
    """A model under evaluation that answers every prompt with the same text (only generation is asked)."""

    def __init__(self, answer: str):
        self.answer = answer

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        return [self.answer for _ in prompts]


def test_a_judged_win_rate_follows_the_rewards_where_f1_would_not(trained: tuple[Path, Any], tmp_path: Path
                                                                  ) -> None:
    # The references are the junk the baseline says, so F1 favours the baseline; the judge favours the sum.
    rows = [{"question": "What is 3 plus 4?", "answer": "banana banana"},
            {"question": "What is 10 plus 5?", "answer": "banana banana"}, "{not json"]
    data = tmp_path / "versus.jsonl"
    data.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    task = TaskRun.model_validate({"name": "versus", "type": "winRate", "dataUri": str(data)})
    ours, theirs = FixedAnswers("7."), FixedAnswers("banana banana")
    by_f1, _, _, _ = score_with(task, ours, theirs, seed=0)
    judged, base, skipped, count = score_with(task, ours, theirs, seed=0, judge=load_judge(str(trained[0])))
    assert by_f1["win_rate"] == 0.0 and judged["win_rate"] == 1.0
    assert judged["f1"] == by_f1["f1"] == 0.0 and base["f1"] == 1.0  # the references still give f1
    assert count == 2 and skipped == ["line 3: bad JSON (Expecting property name enclosed in double quotes)"]


def test_the_cli_judges_rows_without_references_and_says_which_judge(base_model: Path, trained: tuple[Path, Any],
                                                                      tmp_path: Path) -> None:
    judge, model = str(trained[0]), tmp_path / "model"
    shutil.copytree(base_model, model)  # its model card gets the evaluation; the session's base stays as it was
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What is 1 plus 1?"}, {"prompt": "What is 2 plus 9?"},
                                                    {"answer": "no question"}])
    config = {"modelUri": str(model), "baselineUri": str(base_model), "judgeUri": judge, "name": "judged",
              "outputUri": str(tmp_path / "out"),
              "tasks": [{"name": "versus", "type": "winRate", "dataUri": str(data), "maxNewTokens": 4}],
              "thresholds": [{"task": "versus", "metric": "win_rate", "min": 0.5}]}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([str(BIN / "llmops-evaluate"), "--config", str(path)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == exit_codes.SUCCESS, run.stderr
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["judge"] == judge
    versus = document["tasks"]["versus"]
    # The same model on both sides gives the same answers: every prompt is a tie.
    assert versus["winRateJudge"] == judge and versus["metrics"] == {"win_rate": 0.5}
    assert versus["examples"] == 2 and versus["skippedRows"] == ["line 3: no question"]
    assert document["verdict"] == "Passed"
    assert f"winRate judged by the reward model {judge}" in (tmp_path / "out" / "evaluation.md").read_text()
    assert f"winRate judged by the reward model {judge}" in (model / "model-card.md").read_text()


def test_a_causal_language_model_is_refused_as_a_judge(base_model: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a reward model"):
        load_judge(str(base_model))
