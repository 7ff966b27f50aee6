"""Fine-tuning recipe: `llmops-finetune --config FILE` for sft, lora, classification, dpo, reward and distill.

Records are JSONL (TRL-style fields, renamable in the config); malformed ones are skipped and counted.
One small loop serves every method; what differs is how a record becomes tensors and what the loss is:
- sft: prompt + response, loss on the response tokens only (unless trainOnPrompt);
- lora: the sft objective with PEFT adapters on the chosen modules, base weights frozen;
- classification: a sequence-classification head (last-token pooling) on the backbone;
- dpo: sigmoid DPO loss of the policy against a frozen copy of the base model;
- reward: a scalar head trained on chosen/rejected pairs (Bradley-Terry loss, reward.py);
- distill: a student (the base, or a fresh smaller shape) learns a frozen teacher's next-token distributions
  (distill.py).
quantize and prune transform a model without this loop (trainer/compress).

Under torchrun each process trains a DDP replica on its own share of every step's micro-batches (see
`micro_batch_position`), so N processes make the same run as one process accumulating N times as many;
the logged loss is the mean over all processes, and validation and export run on rank 0.

The base model (and a distillation's teacher) and the records are staged in from their URIs; the model and
checkpoints go to the output URI (a path or an object store, trainer/storage.py).
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from llmops.trainer import storage
from llmops.trainer.config import exit_codes, layout
from llmops.trainer.config.files import ConfigFileError, load_config
from llmops.trainer.config.finetune import PREFERENCE_METHODS, TRANSFORM_METHODS, FineTuneMethod, FineTuneRunConfig
from llmops.trainer.model_files import check_model_dir
from llmops.trainer.termination import fail, report_trained

from .checkpoint import Checkpointer, Preempted, sigterm_requests
from .distributed import barrier, global_mean, init_distributed, local_rank_first, shutdown
from .export import export
from .memory import out_of_memory_advice
from .metrics import MetricsLog
from .schedule import learning_rate

IGNORE = -100


@dataclass
class Records:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    malformed: int = 0
    examples: list[str] = field(default_factory=list)


def read_records(config: FineTuneRunConfig, path: Path | None = None) -> Records:
    """JSONL records with the fields the method needs, split deterministically by content hash. `path`: where
    config.data_uri was staged in (default: the URI as a local path)."""
    path = path or layout.local_path(config.data_uri)
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"data: no JSONL records at {config.data_uri}")
    alternatives = record_layouts(config)
    needed = alternatives[0]
    records = Records([], [])
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                ok = isinstance(record, dict) and (
                    any(all(isinstance(record.get(k), str | int) for k in fields) for fields in alternatives)
                    or (config.method in (FineTuneMethod.SFT, FineTuneMethod.LORA)
                        and isinstance(record.get(config.data.fields.messages), list)))
            except json.JSONDecodeError:
                ok = False
            if not ok:
                records.malformed += 1
                if len(records.examples) < 5:
                    records.examples.append(f"{file.name}:{number}: needs fields {', '.join(needed)}")
                continue
            digest = hashlib.sha1(line.encode()).digest()
            held_out = int.from_bytes(digest[:8], "big") / 2**64 < config.data.validation_fraction
            (records.validation if held_out else records.train).append(record)
            if config.data.max_examples and len(records.train) >= config.data.max_examples:
                break
    if not records.train:
        raise ValueError(f"data: no usable records in {config.data_uri} ({records.malformed} malformed)")
    return records


def record_layouts(config: FineTuneRunConfig) -> list[tuple[str, ...]]:
    """The field sets a record of this method may hold (any one suffices; the first is named in errors)."""
    fields = config.data.fields
    if config.method in PREFERENCE_METHODS:
        return [(fields.prompt, fields.chosen, fields.rejected)]
    if config.method is FineTuneMethod.CLASSIFICATION:
        return [(fields.text, fields.label)]
    if config.method in (FineTuneMethod.DISTILL, FineTuneMethod.PRUNE):  # plain text, e.g. a Dataset's documents
        return [(fields.text,), (fields.prompt, fields.response)]
    return [(fields.prompt, fields.response)]


def record_text(record: dict[str, Any], config: FineTuneRunConfig) -> str:
    """The text of a distillation or calibration record: its text field, else prompt and response joined."""
    fields = config.data.fields
    if isinstance(record.get(fields.text), str | int):
        return str(record[fields.text])
    return f"{record[fields.prompt]}\n{record[fields.response]}"


def calibration_texts(config: FineTuneRunConfig, path: Path, count: int) -> list[str]:
    """The first `count` usable records' texts (pruning measures importance on them)."""
    records = read_records(config, path)
    return [record_text(r, config) for r in (records.train + records.validation)[:count]]


def prompt_and_response(record: dict[str, Any], config: FineTuneRunConfig, tokenizer: Any) -> tuple[str, str]:
    fields = config.data.fields
    messages = record.get(fields.messages)
    if isinstance(messages, list) and messages:
        *history, last = messages
        if tokenizer.chat_template or config.sft.chat_template:
            prompt = tokenizer.apply_chat_template(history, chat_template=config.sft.chat_template,
                                                   tokenize=False, add_generation_prompt=True)
        else:
            prompt = "".join(f"{m['role']}: {m['content']}\n" for m in history) + "assistant: "
        return prompt, str(last["content"])
    return f"{record[fields.prompt]}\n", str(record[fields.response])


def sft_example(prompt: str, response: str, tokenizer: Any, config: FineTuneRunConfig) -> dict[str, list[int]]:
    """input ids and labels; prompt positions are IGNORE unless the loss covers the prompt too."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[: config.data.max_length]
    labels = (prompt_ids if config.sft.train_on_prompt else [IGNORE] * len(prompt_ids)) + response_ids
    return {"input_ids": ids, "labels": labels[: len(ids)]}


def pad(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(e["input_ids"]) for e in examples)
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for e in examples:
        gap = length - len(e["input_ids"])
        out["input_ids"].append(e["input_ids"] + [pad_id] * gap)
        out["attention_mask"].append([1] * len(e["input_ids"]) + [0] * gap)
        out["labels"].append(e.get("labels", e["input_ids"]) + [IGNORE] * gap)
    return {k: torch.tensor(v) for k, v in out.items()}


def pack(examples: list[dict[str, list[int]]], capacity: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Several examples per row (first fit, in order), each attending only to itself from position 0.

    Returns input ids, labels, position ids (restarting per example) and a 4-D boolean attention mask that is
    causal within each example and blocks attention across examples and to padding. Every token sees exactly
    what it would see alone, so the loss equals the padded batch's with fewer padded positions.
    """
    capacity = max(capacity, *(len(e["input_ids"]) for e in examples))
    rows: list[list[dict[str, list[int]]]] = []
    for example in examples:
        row = next((r for r in rows if sum(len(e["input_ids"]) for e in r) + len(example["input_ids"]) <= capacity),
                   None)
        if row is None:
            rows.append([example])
        else:
            row.append(example)
    length = max(sum(len(e["input_ids"]) for e in row) for row in rows)
    ids = torch.full((len(rows), length), pad_id)
    labels = torch.full((len(rows), length), IGNORE)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    mask = torch.zeros((len(rows), 1, length, length), dtype=torch.bool)
    for r, row in enumerate(rows):
        start = 0
        for example in row:
            n = len(example["input_ids"])
            ids[r, start:start + n] = torch.tensor(example["input_ids"])
            labels[r, start:start + n] = torch.tensor(example.get("labels", example["input_ids"]))
            labels[r, start] = IGNORE  # never predicted from the previous example's last token
            positions[r, start:start + n] = torch.arange(n)
            mask[r, 0, start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            start += n
        mask[r, 0, start:, start:] = torch.eye(length - start, dtype=torch.bool)  # padding sees itself (no NaN)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask}


def response_logprob(model: Any, prompt: str, response: str, tokenizer: Any, max_length: int) -> torch.Tensor:
    """Sum of log p(response tokens | prompt) under `model`."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    ids = torch.tensor([ids[:max_length]], device=next(model.parameters()).device)
    logits = model(input_ids=ids).logits[0, :-1]
    targets = ids[0, 1:]
    logprobs = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
    return logprobs[len(prompt_ids) - 1:].sum()


@functools.lru_cache(maxsize=4)
def _epoch_order(count: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch)).tolist())


def batch_records(count: int, batch_size: int, seed: int, position: int) -> list[int]:
    """Record indices of the `position`-th micro-batch of the run: consecutive slices of a seeded permutation
    per epoch (a partial last slice is dropped). A pure function of the position, so a resumed run needs only
    its step to continue on the same data."""
    size = min(batch_size, count)
    epoch, index = divmod(position, count // size)
    return list(_epoch_order(count, seed, epoch)[index * size:(index + 1) * size])


def micro_batch_position(step: int, micro: int, rank: int, accumulation: int, world: int) -> int:
    """Position of a rank's micro-batch in the run. Of the accumulation x world micro-batches one process would
    accumulate per step, rank r takes the r-th run of `accumulation`: the world size changes who computes a
    micro-batch, never which micro-batches a step trains on."""
    return (step * world + rank) * accumulation + micro


class Method:
    """A method's model, trainable parameters and loss over a list of records."""

    def __init__(self, config: FineTuneRunConfig, tokenizer: Any, device: torch.device | None = None,
                 base: Path | None = None, teacher: Path | None = None):
        """base, teacher: where config.base_uri and config.teacher_uri were staged in (default: the URIs as local
        paths)."""
        self.config, self.tokenizer = config, tokenizer
        self.device = device or torch.device("cpu")
        base = base or layout.local_path(config.base_uri)
        self.teacher: Any = None
        """distill: the frozen teacher; each process keeps its own, never wrapped in DDP nor checkpointed."""
        if config.method is FineTuneMethod.CLASSIFICATION:
            assert config.classification is not None
            labels = config.classification.labels
            self.model = AutoModelForSequenceClassification.from_pretrained(
                base, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={n: i for i, n in enumerate(labels)}, pad_token_id=tokenizer.pad_token_id)
            if not config.classification.train_backbone:
                for name, param in self.model.named_parameters():
                    param.requires_grad = name.startswith("score")
        elif config.method is FineTuneMethod.REWARD:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                base, num_labels=1, pad_token_id=tokenizer.pad_token_id)
        elif config.method is FineTuneMethod.DISTILL:
            from .distill import prepare

            assert config.teacher_uri is not None  # the config's rules require it
            self.model, self.teacher = prepare(config, tokenizer, base,
                                               teacher or layout.local_path(config.teacher_uri), self.device)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(base)
        if config.method is FineTuneMethod.LORA:
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(self.model, LoraConfig(
                r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM"))
        self.model.to(self.device)
        self.reference = None
        if config.method is FineTuneMethod.DPO:  # each process keeps its own frozen copy; it is never wrapped
            self.reference = copy.deepcopy(self.model).eval()
            for param in self.reference.parameters():
                param.requires_grad = False
        self.policy: Any = self.model
        """What the loss calls: the model, or its DDP wrapper while training under torchrun."""

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def label_index(self, value: Any) -> int:
        assert self.config.classification is not None
        labels = self.config.classification.labels
        return int(value) if isinstance(value, int) or str(value).isdigit() else labels.index(str(value))

    def loss(self, records: list[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, float]]:
        config, tokenizer, fields = self.config, self.tokenizer, self.config.data.fields
        if config.method is FineTuneMethod.CLASSIFICATION:
            batch = tokenizer([str(r[fields.text]) for r in records], padding=True, truncation=True,
                              max_length=config.data.max_length, return_tensors="pt").to(self.device)
            labels = torch.tensor([self.label_index(r[fields.label]) for r in records], device=self.device)
            logits = self.policy(**batch).logits
            return F.cross_entropy(logits, labels), {"accuracy": (logits.argmax(-1) == labels).float().mean().item()}
        if config.method is FineTuneMethod.REWARD:
            from .reward import reward_loss

            return reward_loss(self.policy, records, tokenizer, config)
        if config.method is FineTuneMethod.DISTILL:
            from .distill import distill_loss

            return distill_loss(self.policy, self.teacher, records, tokenizer, config)
        if config.method is FineTuneMethod.DPO:
            assert self.reference is not None
            losses, margins = [], []
            for r in records:
                prompt = f"{r[fields.prompt]}\n"
                policy = [response_logprob(self.policy, prompt, str(r[k]), tokenizer, config.data.max_length)
                          for k in (fields.chosen, fields.rejected)]
                with torch.no_grad():
                    ref = [response_logprob(self.reference, prompt, str(r[k]), tokenizer, config.data.max_length)
                           for k in (fields.chosen, fields.rejected)]
                margin = config.dpo.beta * ((policy[0] - ref[0]) - (policy[1] - ref[1]))
                losses.append(-F.logsigmoid(margin))
                margins.append(margin.item())
            return torch.stack(losses).mean(), {"rewardMargin": sum(margins) / len(margins)}
        examples = [sft_example(*prompt_and_response(r, config, tokenizer), tokenizer, config) for r in records]
        if config.sft.packing:
            batch = pack(examples, config.data.max_length, tokenizer.pad_token_id)
        else:
            batch = pad(examples, tokenizer.pad_token_id)
        return self.policy(**{k: v.to(self.device) for k, v in batch.items()}).loss, {}

    def exportable(self) -> Any:
        if self.config.method is FineTuneMethod.LORA and self.config.lora.merge:
            return self.model.merge_and_unload()
        return self.model


def stage_teacher(config: FineTuneRunConfig) -> Path:
    """A distillation's teacher, staged in and checked like the base model (once per node)."""
    uri = config.teacher_uri
    assert uri is not None  # the config's rules require it for method distill
    teacher = local_rank_first(lambda: storage.stage_in(uri, "teacher model", require=layout.MODEL_CONFIG_FILE))
    check_model_dir(teacher, uri)
    return teacher


def finetune(config: FineTuneRunConfig, metrics: MetricsLog | None = None) -> tuple[dict[str, Any], Any]:
    """Train, evaluate on the held-out records, export; returns the summary and the trained method."""
    rank, world, device = init_distributed()
    metrics = metrics or MetricsLog(enabled=rank == 0)
    torch.manual_seed(config.training.seed)  # the same on every rank: LoRA adapters start equal
    storage.check_bucket(config.output_uri)  # before any training time is spent
    base = local_rank_first(lambda: storage.stage_in(config.base_uri, "base model",
                                                     require=layout.MODEL_CONFIG_FILE))
    check_model_dir(base, config.base_uri)
    teacher = stage_teacher(config) if config.method is FineTuneMethod.DISTILL else None
    data = local_rank_first(lambda: storage.stage_in(config.data_uri, "data"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    records = read_records(config, data)
    method = Method(config, tokenizer, device, base, teacher)
    trainable = sum(p.numel() for p in method.parameters())  # before export merges LoRA adapters away
    training, batch_size = config.training, config.training.batch.micro_batch_size
    accumulation = training.batch.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(records.train) / batch_size / accumulation / world)
    max_steps = training.max_steps or max(1, math.ceil((training.epochs or 1) * steps_per_epoch))
    opt = training.optimizer
    optimizer = torch.optim.AdamW(method.parameters(), lr=opt.learning_rate, betas=(opt.beta1, opt.beta2),
                                  eps=opt.eps, weight_decay=opt.weight_decay)
    if world > 1:
        # Every trainable weight gets a gradient in every method (LoRA's zero-initialised B included), so
        # no unused-parameter search; buffers (rotary frequencies) are equal everywhere, so none are broadcast.
        method.policy = DistributedDataParallel(method.model, device_ids=[device] if device.type == "cuda" else None,
                                                broadcast_buffers=False)
    # Only trainable weights are checkpointed: a LoRA checkpoint holds the adapters, not the frozen base.
    # Every rank takes part in save and restore (DCP collectives).
    checkpoints = Checkpointer(layout.checkpoints_uri(config.output_uri), config.checkpoint.keep_last,
                               trainable_only=True, run=os.environ.get(layout.RUN_ENV))
    start, started = checkpoints.restore(method.model, optimizer), time.monotonic()
    method.model.train()
    with sigterm_requests(config.checkpoint.on_preemption) as stop:
        for step in range(start, max_steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, opt.learning_rate, max_steps, training.schedule)
            sums: dict[str, float] = {"loss": 0.0}
            for micro in range(accumulation):
                position = micro_batch_position(step, micro, rank, accumulation, world)
                chunk = [records.train[i] for i in batch_records(len(records.train), batch_size, training.seed,
                                                                 position)]
                # DDP averages gradients over ranks once per step, at the last micro-batch's backward.
                last = micro == accumulation - 1
                sync = method.policy.no_sync() if world > 1 and not last else nullcontext()
                with sync:
                    loss, extras = method.loss(chunk)
                    (loss / accumulation).backward()
                for name, value in {"loss": loss.item(), **extras}.items():
                    sums[name] = sums.get(name, 0.0) + value / accumulation
            means = global_mean(sums, device)  # what one process accumulating all micro-batches would log
            total = means.pop("loss")
            if not math.isfinite(total):
                metrics.report(step=step + 1, loss=total, error="NonFiniteLoss")
                raise FloatingPointError(f"loss {total} at step {step + 1}; the last good checkpoint is kept")
            if training.gradient_clip_norm:
                torch.nn.utils.clip_grad_norm_(method.parameters(), training.gradient_clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if done % training.log_interval_steps == 0 or done == max_steps:
                metrics.report(step=done, totalSteps=max_steps, loss=round(total, 5),
                               **{k: round(v, 5) for k, v in means.items()})
            checkpoints.end_of_step(done, max_steps, config.checkpoint.interval_steps, stop["requested"], device,
                                    method.model, optimizer, {"config": config.to_wire()})
    method.model.eval()
    method.policy = method.model  # rank 0 alone validates and exports: nothing below may be a collective
    summary: dict[str, Any] = {"method": config.method.value, "steps": max_steps, "trainRecords": len(records.train),
                               "validationRecords": len(records.validation), "malformedRecords": records.malformed,
                               "processes": world, "seconds": round(time.monotonic() - started, 1)}
    if rank == 0:
        if records.validation:
            with torch.no_grad():
                loss, extras = method.loss(records.validation)
            summary.update(validationLoss=round(loss.item(), 5), **{f"validation{k[0].upper()}{k[1:]}": v
                                                                   for k, v in extras.items()})
            metrics.report(step=max_steps, validationLoss=summary["validationLoss"], **extras)
        model_uri = layout.model_uri(config.output_uri)
        with storage.output_dir(model_uri, last=layout.MODEL_CONFIG_FILE) as model_dir:
            export(method.exportable(), tokenizer, model_dir, summary=summary, history=metrics.history,
                   lineage={"base": config.base_uri, "data": config.data_uri, **config.lineage})
        report_trained(model_uri, metrics.history, summary, parameters=trainable, checkpoint=checkpoints.newest)
    barrier()  # the run is done when the model is written, for every rank
    return summary, method


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops-finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="FineTuneRunConfig as YAML or JSON")
    args = parser.parse_args(argv)
    try:
        config = load_config(FineTuneRunConfig, args.config)
    except ConfigFileError as error:
        return fail("llmops-finetune", str(error), exit_codes.CONFIG_ERROR)
    try:
        if config.method in TRANSFORM_METHODS:
            from llmops.trainer.compress.run import transform

            transform(config)
        else:
            finetune(config)
    except torch.OutOfMemoryError:
        batch = config.training.batch
        return fail("llmops-finetune", out_of_memory_advice(batch.micro_batch_size, batch.gradient_accumulation_steps,
                                                            "data.maxLength", config.data.max_length),
                    exit_codes.OUT_OF_MEMORY)
    except (storage.StorageError, OSError, ValueError, NotImplementedError) as error:  # ModelLoadError: ValueError
        return fail("llmops-finetune", str(error), exit_codes.CONFIG_ERROR)
    except FloatingPointError as error:
        return fail("llmops-finetune", f"NonFiniteLoss: {error}", exit_codes.NON_FINITE_LOSS)
    except Preempted as reason:
        return fail("llmops-finetune", str(reason), exit_codes.PREEMPTED)
    finally:
        shutdown()
    return exit_codes.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
