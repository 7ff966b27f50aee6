"""Fine-tune recipes on a tiny pretrained model: each method changes what it should."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmops.trainer.config.finetune import FineTuneRunConfig
from llmops.trainer.train.checkpoint import Preempted
from llmops.trainer.train.finetune import (
    IGNORE,
    Method,
    batch_records,
    finetune,
    micro_batch_position,
    pack,
    read_records,
    sft_example,
)
from llmops.trainer.train.metrics import MetricsLog
from tests.integration import torchrun
from tests.integration.preemption import SigtermAt
from tests.integration.torchrun import run_two

# 32 prompt/response pairs of its own: the example lifecycle's data is sized for the demo, not for these checks.
INSTRUCTIONS = Path(__file__).parent.parent / "data" / "instructions.jsonl"


def config(base: Path, data: Path, output: Path, method: str, **extra: Any) -> FineTuneRunConfig:
    training = {"maxSteps": 30, "batch": {"microBatchSize": 4}, "optimizer": {"learningRate": 3e-3,
                                                                              "weightDecay": 0.0},
                "schedule": {"warmupSteps": 2, "kind": "constant"}, "logIntervalSteps": 1,
                **extra.pop("training", {})}
    return FineTuneRunConfig.model_validate({"baseUri": str(base), "dataUri": str(data), "outputUri": str(output),
                                             "method": method, "training": training,
                                             "data": {"validationFraction": 0.2}, **extra})


def quiet() -> MetricsLog:
    return MetricsLog(stream=open(os.devnull, "w"))  # noqa: SIM115


def losses(metrics: MetricsLog) -> list[float]:
    return [e["loss"] for e in metrics.history if "loss" in e]


def test_sft_puts_the_loss_on_response_tokens_only(base_model: Path, tmp_path: Path) -> None:
    cfg = config(base_model, INSTRUCTIONS, tmp_path, "sft")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    example = sft_example("Who wrote Hamlet?\n", "Shakespeare.", tokenizer, cfg)
    prompt_length = len(tokenizer("Who wrote Hamlet?\n", add_special_tokens=False)["input_ids"])
    assert example["labels"][:prompt_length] == [IGNORE] * prompt_length
    assert example["labels"][prompt_length:] == example["input_ids"][prompt_length:]
    with_prompt = sft_example("Who wrote Hamlet?\n", "Shakespeare.", tokenizer,
                              config(base_model, INSTRUCTIONS, tmp_path, "sft", sft={"trainOnPrompt": True}))
    assert IGNORE not in with_prompt["labels"]

    metrics = quiet()
    summary, _ = finetune(cfg, metrics)
    curve = losses(metrics)
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.5
    assert summary["trainRecords"] + summary["validationRecords"] == 32
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "model") is not None


def test_packed_sft_gives_the_padded_loss_with_less_padding(base_model: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    records = read_records(config(base_model, INSTRUCTIONS, tmp_path, "sft")).train[:8]
    padded = Method(config(base_model, INSTRUCTIONS, tmp_path, "sft"), tokenizer)
    packed = Method(config(base_model, INSTRUCTIONS, tmp_path, "sft", sft={"packing": True}), tokenizer)
    with torch.no_grad():
        assert packed.loss(records)[0].item() == pytest.approx(padded.loss(records)[0].item(), rel=1e-5)

    examples = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]},
                {"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}]
    batch = pack(examples, capacity=5, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]]  # 2 rows instead of 3
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9], [IGNORE, 2, 3, 4, IGNORE]]
    assert not batch["attention_mask"][0, 0, 3, :3].any()  # the second example cannot see the first
    assert batch["attention_mask"][0, 0, 4].tolist() == [False, False, False, True, True]


def test_batches_are_a_function_of_the_step() -> None:
    first = [batch_records(10, 4, seed=3, position=p) for p in range(6)]
    assert first == [batch_records(10, 4, seed=3, position=p) for p in range(6)]
    assert sorted(first[0] + first[1]) == sorted(set(first[0] + first[1]))  # no repeats within an epoch
    assert all(len(b) == 4 for b in first) and batch_records(3, 4, seed=3, position=5) != []


def test_a_preempted_lora_finetune_resumes_on_the_same_loss_curve(base_model: Path, tmp_path: Path) -> None:
    def run(output: Path, metrics: MetricsLog) -> None:
        finetune(config(base_model, INSTRUCTIONS, output, "lora", lora={"rank": 4},
                        training={"maxSteps": 12}, checkpoint={"intervalSteps": 100}), metrics)

    straight = quiet()
    run(tmp_path / "straight", straight)
    with pytest.raises(Preempted):
        run(tmp_path / "resumed", SigtermAt(7))
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-00000007"
    saved = [k for k in FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata if k.startswith("model.")]
    assert saved and all("lora_" in k for k in saved)  # adapters only, not the frozen base
    resumed = quiet()
    run(tmp_path / "resumed", resumed)
    first = {e["step"]: e["loss"] for e in straight.history if "loss" in e}
    second = {e["step"]: e["loss"] for e in resumed.history if "loss" in e}
    assert min(second) == 8
    for step in range(8, 13):
        assert second[step] == pytest.approx(first[step], rel=1e-5, abs=1e-6), step


def test_lora_trains_only_the_adapters(base_model: Path, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(base_model).state_dict().items()}
    cfg = config(base_model, INSTRUCTIONS, tmp_path, "lora",
                 lora={"rank": 4, "targetModules": ["q_proj", "v_proj"], "merge": False})
    _, method = finetune(cfg, quiet())
    trainable = {n for n, p in method.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for name, value in method.model.named_parameters():
        if "lora_" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            assert torch.equal(value.detach(), before[key]), name
    assert (tmp_path / "model" / "adapter_config.json").is_file()  # merge: false exports the adapter alone

    merged = config(base_model, INSTRUCTIONS, tmp_path / "merged", "lora", lora={"rank": 4})
    finetune(merged, quiet())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "model")
    changed = any(not torch.equal(v, before[k]) for k, v in model.state_dict().items() if k in before)
    assert changed  # merged weights differ from the base


def test_dpo_raises_the_chosen_over_rejected_margin(base_model: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = []
    for i in range(24):
        rows.append({"prompt": f"Question {i}: who wrote the play?",
                     "chosen": "William Shakespeare wrote it.", "rejected": rng.choice(["No idea.", "A cat."])})
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = quiet()
    summary, _ = finetune(config(base_model, data, tmp_path, "dpo", dpo={"beta": 0.5},
                                 training={"maxSteps": 15, "batch": {"microBatchSize": 4}}), metrics)
    margins = [e["rewardMargin"] for e in metrics.history if "rewardMargin" in e and "loss" in e]
    assert margins[0] < 0.5 < margins[-1]
    assert summary["validationRewardMargin"] > 0.5


def test_classification_beats_chance_on_a_separable_task(base_model: Path, tmp_path: Path) -> None:
    rng = random.Random(1)
    good, bad = ["sunny", "bright", "happy", "warm"], ["storm", "dark", "cold", "grim"]
    rows = [{"text": " ".join(rng.choices(good if i % 2 else bad, k=6)), "label": "good" if i % 2 else "bad"}
            for i in range(120)]
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary, _ = finetune(config(base_model, data, tmp_path, "classification",
                                 classification={"labels": ["bad", "good"]},
                                 training={"maxSteps": 40, "batch": {"microBatchSize": 8}}), quiet())
    assert summary["validationAccuracy"] > 0.8  # chance is 0.5

    # The exported classifier is scored by the evaluation workload like any model.
    from llmops.trainer.config.evaluate import EvalJobConfig
    from llmops.trainer.evaluate.run import evaluate

    document = evaluate(EvalJobConfig.model_validate({
        "modelUri": str(tmp_path / "model"), "outputUri": str(tmp_path / "eval"),
        "tasks": [{"name": "labels", "type": "classification", "dataUri": str(data)}],
        "thresholds": [{"task": "labels", "metric": "acc", "min": 0.8}]}))
    assert document["verdict"] == "Passed" and document["tasks"]["labels"]["metrics"]["f1"] > 0.8


def test_malformed_records_are_skipped_and_counted(base_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\nnot json\n{"prompt": "only a prompt"}\n'
                    '{"prompt": "c", "response": "d"}\n')
    records = read_records(config(base_model, data, tmp_path, "sft"))
    assert len(records.train) + len(records.validation) == 2 and records.malformed == 2
    assert records.examples[0] == "mixed.jsonl:2: needs fields prompt, response"


def preferences(path: Path) -> Path:
    rng = random.Random(0)
    path.write_text("".join(json.dumps({"prompt": f"Question {i}: who wrote the play?",
                                        "chosen": "William Shakespeare wrote it.",
                                        "rejected": rng.choice(["No idea.", "A cat."])}) + "\n" for i in range(24)))
    return path


def test_each_rank_takes_its_share_of_the_micro_batches_one_process_would_take() -> None:
    for accumulation, world in ((1, 2), (2, 2), (3, 4)):
        for step in range(3):
            spread = sorted(micro_batch_position(step, micro, rank, accumulation, world)
                            for rank in range(world) for micro in range(accumulation))
            alone = [micro_batch_position(step, micro, 0, accumulation * world, 1)
                     for micro in range(accumulation * world)]
            assert spread == alone, (accumulation, world, step)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "dpo"])
def test_two_processes_match_one_process_accumulating_two(base_model: Path, tmp_path: Path, method: str) -> None:
    data = INSTRUCTIONS if method == "lora" else preferences(tmp_path / "prefs.jsonl")
    # No dropout: each rank draws its own dropout masks, so only a dropout-free run can be compared exactly.
    settings: dict[str, Any] = {"lora": {"rank": 4, "dropout": 0.0}} if method == "lora" else {"dpo": {"beta": 0.5}}
    steps = 6

    def run_config(output: Path, accumulation: int) -> FineTuneRunConfig:
        return config(base_model, data, output, method, **settings, checkpoint={"intervalSteps": 3},
                      training={"maxSteps": steps, "batch": {"microBatchSize": 2,
                                                             "gradientAccumulationSteps": accumulation}})

    single = quiet()
    finetune(run_config(tmp_path / "one", 2), single)
    events = run_two("llmops-finetune", run_config(tmp_path / "two", 1), tmp_path / "two.yaml")
    two = [e for e in events if e.get("loss") is not None]
    one = {e["step"]: e for e in single.history if "loss" in e}
    assert [e["step"] for e in two] == list(range(1, steps + 1))  # rank 0 alone reports, once per step
    extra = "rewardMargin" if method == "dpo" else None
    for event in two:  # the same batches, gradients averaged by DDP, the global mean logged: the same run
        assert event["loss"] == pytest.approx(one[event["step"]]["loss"], rel=1e-3), (event, one)
        if extra:
            assert event[extra] == pytest.approx(one[event["step"]][extra], rel=1e-3, abs=1e-4), (event, one)
    assert (tmp_path / "two" / "checkpoints" / "step-00000003" / "meta.json").exists()
    assert "| processes | 2 |" in (tmp_path / "two" / "model" / "model-card.md").read_text()


def workers(torchrun: int) -> dict[int, int]:
    """Global rank -> pid of torchrun's worker processes (its children)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
        except (OSError, ValueError, IndexError):
            continue
        if parent == torchrun and b"RANK" in environ:
            found[int(environ[b"RANK"])] = int(proc.name)
    return found


@pytest.mark.slow
def test_sigterm_on_one_rank_checkpoints_all_and_the_run_resumes_on_the_same_curve(base_model: Path,
                                                                                    tmp_path: Path) -> None:
    def run_config(output: Path, accumulation: int) -> FineTuneRunConfig:
        return config(base_model, INSTRUCTIONS, output, "lora", lora={"rank": 4, "dropout": 0.0},
                      checkpoint={"intervalSteps": 1000},
                      training={"maxSteps": 40, "batch": {"microBatchSize": 2,
                                                          "gradientAccumulationSteps": accumulation}})

    single = quiet()
    finetune(run_config(tmp_path / "one", 2), single)
    one = {e["step"]: e["loss"] for e in single.history if "loss" in e}
    command = torchrun.command("llmops-finetune", torchrun.write_config(run_config(tmp_path / "two", 1),
                                                                       tmp_path / "two.yaml"))
    env = torchrun.ENV

    # A node drain: only rank 1 gets SIGTERM. The ranks agree to stop at one step and all take part in the
    # checkpoint; a rank checkpointing alone would wait for the others for ever.
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ranks: dict[int, int] = {}
    try:
        assert run.stdout is not None
        for line in run.stdout:
            if line.startswith('{"event"') and json.loads(line).get("step") == 2:
                ranks = workers(run.pid)
                os.kill(ranks[1], signal.SIGTERM)
                break
        _, stderr = run.communicate(timeout=180)  # a hang (ranks disagreeing) fails here
    finally:
        if run.poll() is None:  # the workers hold the output pipes open: end them too
            for pid in [*ranks.values(), run.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run.communicate()
    assert run.returncode != 0 and "SIGTERM at step" in stderr, stderr[-3000:]
    (checkpoint,) = (tmp_path / "two" / "checkpoints").glob("step-*")
    stopped = int(checkpoint.name.removeprefix("step-"))
    assert 2 <= stopped < 40 and not (tmp_path / "two" / "model").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    two = {e["step"]: e["loss"] for line in resumed.stdout.splitlines() if line.startswith('{"event"')
           for e in [json.loads(line)] if e.get("loss") is not None}
    assert min(two) == stopped + 1 and max(two) == 40
    for step, loss in two.items():
        assert loss == pytest.approx(one[step], rel=1e-3), (step, two, one)
