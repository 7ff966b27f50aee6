"""Run an evaluation: score every task, apply the thresholds, write results.json and the model card.

The model is a `Scorer`: loaded here from its directory (`LocalModel`), or a live server scored over HTTP
(`endpoint.EndpointModel`). Both answer the same three questions (rolling log-likelihoods of documents,
log-likelihoods of continuations, greedy generations), and every metric is computed from those answers by
the same code, so the two agree wherever the answers do.

Models and task data are staged in from their URIs and results.json goes to the output URI (a path or an object
store, trainer/storage.py).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from llmops.trainer import storage
from llmops.trainer.config import layout
from llmops.trainer.config.evaluate import EvalJobConfig, Metric, TaskRun, TaskType
from llmops.trainer.data.progress import Progress
from llmops.trainer.model_files import check_model_dir, context_length

from . import batching, scoring, tasks
from .endpoint import EndpointModel, UnsupportedTask, check_tasks
from .judge import RewardJudge, load_judge
from .verdict import verdict

F1_JUDGE = "f1"
"""How a winRate task without a judge decides a prompt (results.json's winRateJudge): the higher F1 against the
references."""


def stage_model(uri: str, what: str = "model") -> Path:
    """The local directory of the model at `uri`, checked to be loadable (ModelLoadError names the URI)."""
    path = storage.stage_in(uri, what, require=layout.MODEL_CONFIG_FILE)
    check_model_dir(path, uri)
    return path


def load(path: Path, classification: bool = False) -> tuple[Any, Any]:
    """Model and tokenizer from a staged, checked directory (see stage_model). A quantized model (FineTune method
    quantize) is loaded as llmops-serve loads it, with the same kernels: the numbers are those of the model served,
    and the compressed-tensors package is not needed."""
    from llmops.trainer.serve import loader

    if not classification and loader.weight_quantization(path) is not None:
        from llmops.trainer.config.serve import Dtype

        served = loader.load(path, Dtype.FLOAT32, device="cpu")
        return served.model, served.tokenizer
    tokenizer = AutoTokenizer.from_pretrained(path)
    cls = AutoModelForSequenceClassification if classification else AutoModelForCausalLM
    return cls.from_pretrained(path).eval(), tokenizer


def is_classifier(path: Path) -> bool:
    architectures = AutoConfig.from_pretrained(path).architectures or []
    return any("SequenceClassification" in a for a in architectures)


def _question(row: dict[str, Any]) -> str:
    return str(row.get("question", row.get("prompt")))


def _prompt(row: dict[str, Any]) -> str:
    return f"Question: {_question(row)}\nAnswer:"


def _fewshot(rows: list[dict[str, Any]], index: int, shots: int, seed: int) -> str:
    if not shots:
        return ""
    others = [r for i, r in enumerate(rows) if i != index]
    picked = random.Random(seed * 1_000_003 + index).sample(others, min(shots, len(others)))
    return "".join(f"{_prompt(r)} {r['choices'][r.get('answer', r.get('gold'))]}\n\n" for r in picked)


class Scorer(Protocol):
    """What the metrics ask of a model under evaluation."""

    def rolling(self, docs: list[str], stride: int | None) -> list[tuple[float, int]]:
        """(sum of log p over the document's tokens, tokens scored) per document, in sliding windows of the
        model's context advancing by `stride` tokens (unset: half the context)."""
        ...

    def loglikelihoods(self, requests: list[tuple[str, str]]) -> list[float]:
        """log p(continuation | context) per (context, continuation)."""
        ...

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy completion of each prompt (at least its first line)."""
        ...


@dataclass
class LocalModel:
    """A model loaded in this process: the reference the other scorers are checked against."""

    model: Any
    tokenizer: Any

    token_budget: int = batching.DEFAULT_TOKEN_BUDGET
    """Tokens per forward pass when scoring (see batching.pack)."""

    def rolling(self, docs: list[str], stride: int | None) -> list[tuple[float, int]]:
        context = context_length(self.model.config, 512)
        stride = stride or max(1, context // 2)
        ids = self._encode(docs)
        return scoring.rolling_loglikelihoods(self.model, ids, self.tokenizer.eos_token_id, context, stride,
                                              self.token_budget)

    def loglikelihoods(self, requests: list[tuple[str, str]]) -> list[float]:
        # lm-eval's empty-context token: BOS, else EOS.
        prefix = self.tokenizer.bos_token_id
        prefix = self.tokenizer.eos_token_id if prefix is None else prefix
        pairs = batching.encode_pairs(self._encode, requests, prefix)
        return scoring.loglikelihoods(self.model, pairs, context_length(self.model.config, 512), self.token_budget)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # One call for all texts: a fast tokenizer encodes a list in parallel.
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        tokenizer, out = self.tokenizer, []
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False, return_token_type_ids=False)
            generated = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            out.append(tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return out


def score_task(task: TaskRun, model: Any, tokenizer: Any, baseline: tuple[Any, Any] | None,
               seed: int) -> tuple[dict[str, float], dict[str, float], list[str], int]:
    """(metrics, baseline metrics, skipped rows, examples scored) for one task of a loaded model."""
    return score_with(task, LocalModel(model, tokenizer), LocalModel(*baseline) if baseline else None, seed)


def _local(scorer: Scorer, task: TaskRun) -> LocalModel:
    if not isinstance(scorer, LocalModel):  # check_tasks refuses these first; this guards other callers
        raise UnsupportedTask(f"task {task.name!r}: type {task.type.value} needs the model loaded from modelUri")
    return scorer


def score_with(task: TaskRun, model: Scorer, baseline: Scorer | None, seed: int,
               judge: RewardJudge | None = None) -> tuple[dict[str, float], dict[str, float], list[str], int]:
    """(metrics, baseline metrics, skipped rows, examples scored) for one task; `judge` decides winRate tasks
    (unset: F1 against the references does)."""
    if task.type is TaskType.LM_EVAL:
        local = _local(model, task)
        return lm_eval_task(task, local.model, local.tokenizer, seed), {}, [], task.limit or 0
    if task.data_uri is None:
        raise tasks.TaskDataError(f"task {task.name!r}: no data")
    if task.type is TaskType.PERPLEXITY:
        docs = tasks.texts(task.name, task.data_uri, task.limit)
        values = _perplexity(model, docs, task)
        base = _perplexity(baseline, docs, task) if baseline else {}
        return values, base, [], len(docs)
    if task.type is TaskType.MULTIPLE_CHOICE:
        data = tasks.read_rows(task.name, task.data_uri, tasks.multiple_choice_problem, task.limit)
        values = _multiple_choice(model, data.rows, task, seed)
        base = _multiple_choice(baseline, data.rows, task, seed) if baseline else {}
        return values, base, data.skipped, len(data.rows)
    if task.type in (TaskType.EXACT_MATCH, TaskType.WIN_RATE):
        return _generation_task(task, model, baseline, judge)
    data = tasks.read_rows(task.name, task.data_uri, tasks.classification_problem, task.limit)
    local = _local(model, task)
    return _classification(local.model, local.tokenizer, data.rows), {}, data.skipped, len(data.rows)


def _generation_task(task: TaskRun, model: Scorer, baseline: Scorer | None,
                     judge: RewardJudge | None) -> tuple[dict[str, float], dict[str, float], list[str], int]:
    """exactMatch and winRate: greedy answers, exact_match and f1 where the rows have references, and for
    winRate the share of prompts where ours beat the baseline's (by the judge, else by F1)."""
    assert task.data_uri is not None
    win_rate = task.type is TaskType.WIN_RATE
    if win_rate and baseline is None:
        raise tasks.TaskDataError(f"task {task.name!r}: winRate needs a baseline model")
    judged = win_rate and judge is not None
    data = tasks.read_rows(task.name, task.data_uri, tasks.judged_problem if judged else tasks.exact_match_problem,
                           task.limit)
    ours = _answers(model, data.rows, task)
    theirs = _answers(baseline, data.rows, task) if baseline else None
    referenced = all(tasks.has_references(row) for row in data.rows)  # judged rows may have none
    values = _exact_match(ours, data.rows) if referenced else {}
    base = _exact_match(theirs, data.rows) if referenced and theirs is not None else {}
    if win_rate:
        assert theirs is not None
        values["win_rate"] = (judge.win_rate([_question(row) for row in data.rows], ours, theirs) if judge
                              else _win_rate(ours, theirs, data.rows))
    return values, base, data.skipped, len(data.rows)


def lm_eval_task(task: TaskRun, model: Any, tokenizer: Any, seed: int) -> dict[str, float]:
    """Run an lm-evaluation-harness task on our loaded model. Its data must be local: `dataUri` is a directory
    of task YAMLs (with local data files); nothing is downloaded (the hub is switched off)."""
    import os

    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=task.data_uri) if task.data_uri else TaskManager()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    output = lm_eval.simple_evaluate(model=lm, tasks=[task.lm_eval_task], task_manager=manager,
                                     num_fewshot=task.num_fewshot or None, limit=task.limit,
                                     random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                     fewshot_random_seed=seed)
    known = {m.value for m in Metric}
    return {name.split(",")[0]: float(value) for name, value in output["results"][task.lm_eval_task].items()
            if "," in name and "stderr" not in name and name.split(",")[0] in known}


def _perplexity(model: Scorer, docs: list[str], task: TaskRun) -> dict[str, float]:
    total, count, n_bytes = 0.0, 0, 0
    for doc, (ll, n) in zip(docs, model.rolling(docs, task.stride), strict=True):
        total, count, n_bytes = total + ll, count + n, n_bytes + len(doc.encode("utf-8"))
    if not count:
        raise tasks.TaskDataError(f"task {task.name!r}: the documents have no tokens")
    return {"perplexity": scoring.perplexity(total, count), "bits_per_byte": scoring.bits_per_byte(total, n_bytes)}


def _multiple_choice(model: Scorer, rows: list[dict[str, Any]], task: TaskRun, seed: int) -> dict[str, float]:
    contexts = [_fewshot(rows, index, task.num_fewshot, seed) + _prompt(row) for index, row in enumerate(rows)]
    flat = iter(model.loglikelihoods([(context, " " + c) for context, row in zip(contexts, rows, strict=True)
                                      for c in row["choices"]]))
    correct = correct_norm = 0
    for row in rows:
        lls = [next(flat) for _ in row["choices"]]
        gold = row.get("answer", row.get("gold"))
        correct += int(max(range(len(lls)), key=lambda i: lls[i]) == gold)
        # As lm-eval: normalise by the choice's length in characters, without the leading space.
        normalized = [ll / max(1, len(c)) for ll, c in zip(lls, row["choices"], strict=True)]
        correct_norm += int(max(range(len(normalized)), key=lambda i: normalized[i]) == gold)
    return {"acc": correct / len(rows), "acc_norm": correct_norm / len(rows)}


def _answers(model: Scorer, rows: list[dict[str, Any]], task: TaskRun) -> list[str]:
    """The first line of each greedy answer, trimmed."""
    generated = model.generate([_prompt(row) for row in rows], task.max_new_tokens)
    return [text.split("\n")[0].strip() for text in generated]


def _golds(row: dict[str, Any]) -> list[str]:
    answer = row.get("answer", row.get("answers"))
    return [answer] if isinstance(answer, str) else list(answer)


def _exact_match(predictions: list[str], rows: list[dict[str, Any]]) -> dict[str, float]:
    em = f1 = 0.0
    for prediction, row in zip(predictions, rows, strict=True):
        golds = _golds(row)
        em += max(float(scoring.normalize_answer(prediction) == scoring.normalize_answer(g)) for g in golds)
        f1 += max(scoring.f1(prediction, g) for g in golds)
    return {"exact_match": em / len(rows), "f1": f1 / len(rows)}


def _win_rate(ours: list[str], theirs: list[str], rows: list[dict[str, Any]]) -> float:
    wins = 0.0
    for mine, other, row in zip(ours, theirs, rows, strict=True):
        a = max(scoring.f1(mine, g) for g in _golds(row))
        b = max(scoring.f1(other, g) for g in _golds(row))
        wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / len(rows)


@torch.no_grad()
def _classification(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    label2id = {str(k): v for k, v in model.config.label2id.items()}
    golds = [int(r["label"]) if str(r["label"]).isdigit() else label2id[str(r["label"])] for r in rows]
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt", return_token_type_ids=False)
    predictions = model(**batch).logits.argmax(-1).tolist()
    accuracy = sum(p == g for p, g in zip(predictions, golds, strict=True)) / len(rows)
    f1s = []
    for label in sorted(set(golds)):
        tp = sum(p == g == label for p, g in zip(predictions, golds, strict=True))
        fp = sum(p == label != g for p, g in zip(predictions, golds, strict=True))
        fn = sum(g == label != p for p, g in zip(predictions, golds, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"acc": accuracy, "f1": sum(f1s) / len(f1s)}


def evaluate(config: EvalJobConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Score all tasks, decide the verdict, write results.json; returns the results document.

    `progress` gets one report per task (the operator shows it in the Evaluation's status)."""
    progress = progress or Progress(enabled=False)
    torch.manual_seed(config.seed)
    storage.check_bucket(config.output_uri)  # before any scoring time is spent
    staged = [task.model_copy(update={"data_uri": str(storage.stage_in(task.data_uri, f"task {task.name!r} data"))})
              if task.data_uri else task for task in config.tasks]
    model, baseline = _models(config)
    judge = load_judge(config.judge_uri) if config.judge_uri else None
    values: dict[tuple[str, str], float] = {}
    base_values: dict[tuple[str, str], float] = {}
    task_reports = {}
    for done, task in enumerate(staged):
        progress.report(task.name, done, len(config.tasks), "tasks")
        measured, base, skipped, count = score_with(task, model, baseline, config.seed, judge)
        values.update({(task.name, k): round(v, 6) for k, v in measured.items()})
        base_values.update({(task.name, k): round(v, 6) for k, v in base.items()})
        task_reports[task.name] = {"type": task.type.value, "examples": count, "skipped": len(skipped),
                                   "skippedRows": skipped[:20], "metrics": measured}
        if task.type is TaskType.WIN_RATE:
            task_reports[task.name]["winRateJudge"] = judge.uri if judge else F1_JUDGE
    progress.report("done", len(config.tasks), len(config.tasks), "tasks")
    decision, results = verdict(config.thresholds, values, base_values)
    scored = config.model_uri or (config.endpoint.url if config.endpoint else None)
    document = {"name": config.name, "verdict": decision, "model": scored,
                "baseline": config.baseline_uri, "judge": config.judge_uri, "createdAt": datetime.now(UTC).isoformat(),
                "results": [r.to_wire() for r in results], "tasks": task_reports}
    with storage.open(layout.results_uri(config.output_uri), "w") as file:
        file.write(json.dumps(document, indent=2))
    section = _card_section(document)
    with storage.open(layout.join(config.output_uri, "evaluation.md"), "w") as file:
        file.write(section.lstrip())
    _append_to_model_card(config.model_uri, section)
    return document


def _append_to_model_card(model_uri: str | None, section: str) -> None:
    """Add the evaluation to a local model's card. A served model has none here, and a model on a store is left
    as it was published (its evaluation.md and results.json are beside the results)."""
    if not model_uri or not layout.is_local(model_uri):
        return
    card = layout.local_path(model_uri) / layout.MODEL_CARD_FILE
    try:
        if card.is_file():
            card.write_text(card.read_text() + section)
    except OSError:  # a read-only model volume: results.json is the record
        pass


def _models(config: EvalJobConfig) -> tuple[Scorer, Scorer | None]:
    """The model under evaluation and the baseline: loaded from their directories, or the endpoint (checked
    to be able to score every task before any request)."""
    if config.endpoint:
        check_tasks(config.tasks)
        return EndpointModel(config.endpoint), None
    assert config.model_uri  # the config allows exactly one of the two
    path = stage_model(config.model_uri)
    classifier = is_classifier(path)
    model, tokenizer = load(path, classification=classifier)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    baseline = load(stage_model(config.baseline_uri, "baseline model"), classification=classifier) \
        if config.baseline_uri else None
    return LocalModel(model, tokenizer), LocalModel(*baseline) if baseline else None


def _card_section(document: dict[str, Any]) -> str:
    rows = "\n".join(f"| {r['task']} | {r['metric']} | {r['value']:.6g} | {r.get('threshold', '')} | "
                     f"{'' if r.get('passed') is None else ('pass' if r['passed'] else 'FAIL')} |"
                     for r in document["results"])
    judged = f"\nwinRate judged by the reward model {document['judge']}.\n" if document.get("judge") else ""
    return (f"\n## Evaluation {document['name']}: {document['verdict']}\n\n"
            f"| task | metric | value | threshold | result |\n|---|---|---|---|---|\n{rows}\n{judged}")
