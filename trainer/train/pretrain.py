"""Pretraining recipe: `llmops-pretrain --config FILE`, run by torchrun (or alone for one process).

With `init` it continues an existing model (trainer/train/init.py) instead of starting from random weights.
One readable loop: deterministic batches from the Dataset's shards, AdamW with a warm-up + decay schedule,
gradient accumulation and clipping, autocast on GPUs, DDP or FSDP2 across processes, periodic validation,
checkpoints every N steps, at the end and on SIGTERM, metrics as JSON lines. The dataset is staged in from its
URI and the model and checkpoints go to the output URI (a path or an object store, trainer/storage.py). Exit codes
(trainer/config/exit_codes.py) tell the operator whether to retry: preempted (75) yes, non-finite loss (65), out
of memory (71) or a bad config or missing bucket/object (78) no.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.nn.parallel import DistributedDataParallel

from llmops.trainer import storage
from llmops.trainer.config import exit_codes, layout
from llmops.trainer.config.files import ConfigFileError, load_config
from llmops.trainer.config.manifest import DatasetManifest
from llmops.trainer.config.training import Precision, PretrainRunConfig, Strategy
from llmops.trainer.termination import fail, report_trained

from .checkpoint import Checkpointer, Preempted, sigterm_requests
from .distributed import barrier, global_mean, init_distributed, local_rank_first, shutdown
from .export import export, wrap_tokenizer
from .init import check_tokenizer, load_weights, shape_of
from .memory import out_of_memory_advice
from .metrics import MetricsLog, flops_per_token, peak_flops
from .model import build_model, to_huggingface
from .schedule import learning_rate
from .shards import TokenShards


def _autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    if precision is Precision.FP32 or device.type != "cuda":
        return None if precision is not Precision.BF16 else torch.bfloat16
    if precision is Precision.FP16:
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


def _optimizer(model: torch.nn.Module, config: PretrainRunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not norms, not biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = config.training.optimizer
    fused = opt.fused if opt.fused is not None else True  # fused kernels exist for CUDA and CPU
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opt.learning_rate, betas=(opt.beta1, opt.beta2), eps=opt.eps, fused=fused)


def train(config: PretrainRunConfig, metrics: MetricsLog | None = None) -> tuple[dict[str, Any], torch.nn.Module]:
    """Run (or resume) training to training.maxSteps and export the model; returns the summary and model."""
    rank, world, device = init_distributed()
    port = int(os.environ.get("LLMOPS_METRICS_PORT", "0")) or None  # Prometheus, rank 0 only
    metrics = metrics or MetricsLog(enabled=rank == 0, port=port if rank == 0 else None)
    storage.check_bucket(config.output_uri)  # before any training time is spent
    data_dir = local_rank_first(lambda: storage.stage_in(config.data_uri, "dataset", require=layout.MANIFEST_FILE))
    manifest = DatasetManifest.read(data_dir / layout.MANIFEST_FILE)
    train_data, valid_data = TokenShards(data_dir, "train"), TokenShards(data_dir, "validation")
    shape, vocab = config.model, config.model.vocab_size or manifest.tokenizer.vocab_size
    if config.init is not None:  # continued pretraining: the parent's shape and weights
        init = config.init
        init_dir = local_rank_first(lambda: storage.stage_in(init.uri, "init model", require=layout.MODEL_CONFIG_FILE))
        check_tokenizer(init_dir, data_dir, init)
        shape, vocab = shape_of(init_dir, init)
    training, max_steps = config.training, int(config.training.max_steps or 0)
    batch = training.batch
    length = shape.context_length

    torch.manual_seed(training.seed)
    model = build_model(shape, vocab, train_data.eos_id)
    if config.init is not None:
        load_weights(model, init_dir)
    model = model.to(device)
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if world > 1 and training.strategy is Strategy.FSDP:
        from torch.distributed.fsdp import fully_shard

        for layer in model.layers:
            fully_shard(layer)
        wrapped: torch.nn.Module = fully_shard(model)
    elif world > 1:
        wrapped = DistributedDataParallel(model)
    else:
        wrapped = model
    if training.compile:
        wrapped = torch.compile(wrapped)
    optimizer = _optimizer(model, config, device)
    autocast = _autocast_dtype(training.precision, device)
    scaler = torch.amp.GradScaler(enabled=autocast is torch.float16)
    checkpoints = Checkpointer(layout.checkpoints_uri(config.output_uri), config.checkpoint.keep_last,
                               run=os.environ.get(layout.RUN_ENV))
    start = checkpoints.restore(model, optimizer)

    tokens_per_step = batch.micro_batch_size * batch.gradient_accumulation_steps * length * world
    peak = peak_flops(torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    flops_token = flops_per_token(parameters, shape.num_layers, shape.hidden_size, length)
    meta = {"config": config.to_wire()}

    def forward_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        context = torch.autocast(device.type, dtype=autocast) if autocast else nullcontext()
        with context:
            logits = wrapped(inputs.to(device))
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.to(device).reshape(-1))

    def validation_loss() -> float | None:
        if len(valid_data) <= length + 1:
            return None
        wrapped.eval()
        with torch.no_grad():
            losses = [forward_loss(x, y).item() for x, y in
                      valid_data.sequential(batch.micro_batch_size, length, training.eval_batches)]
        wrapped.train()
        return sum(losses) / len(losses)

    wrapped.train()
    window_start, window_loss, window_steps = time.monotonic(), 0.0, 0
    with sigterm_requests(config.checkpoint.on_preemption) as stop:
        for step in range(start, max_steps):
            lr = learning_rate(step, training.optimizer.learning_rate, max_steps, training.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for micro in range(batch.gradient_accumulation_steps):
                inputs, targets = train_data.batch(
                    batch.micro_batch_size, length, seed=training.seed, step=step,
                    index=rank * batch.gradient_accumulation_steps + micro)
                last = micro == batch.gradient_accumulation_steps - 1
                sync = nullcontext() if last or not isinstance(wrapped, DistributedDataParallel) else wrapped.no_sync()
                with sync:
                    loss = forward_loss(inputs, targets) / batch.gradient_accumulation_steps
                    scaler.scale(loss).backward()
                step_loss += loss.item()
            # The global mean: the same number one process accumulating every rank's micro-batches would log.
            step_loss = global_mean({"loss": step_loss}, device)["loss"]
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), training.gradient_clip_norm or float("inf")).item()
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                metrics.report(step=step + 1, loss=step_loss, gradNorm=grad_norm, error="NonFiniteLoss")
                raise FloatingPointError(f"loss {step_loss} / grad norm {grad_norm} at step {step + 1}; "
                                         "the last good checkpoint is kept")
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            window_loss, window_steps = window_loss + step_loss, window_steps + 1

            done = step + 1
            if done % training.log_interval_steps == 0 or done == max_steps:
                elapsed = time.monotonic() - window_start
                rate = tokens_per_step * window_steps / elapsed if elapsed > 0 else None
                metrics.report(step=done, totalSteps=max_steps, loss=round(window_loss / window_steps, 5),
                               learningRate=lr, gradNorm=round(grad_norm, 5),
                               tokensPerSecond=round(rate, 1) if rate else None, tokensSeen=done * tokens_per_step,
                               mfu=round(rate * flops_token / (peak * world), 4) if rate and peak else None,
                               etaSeconds=round((max_steps - done) * tokens_per_step / rate) if rate else None)
                window_start, window_loss, window_steps = time.monotonic(), 0.0, 0
            if done % training.eval_interval_steps == 0 or done == max_steps:
                metrics.report(step=done, validationLoss=validation_loss())
            checkpoints.end_of_step(done, max_steps, config.checkpoint.interval_steps, stop["requested"], device,
                                    model, optimizer, meta)

    summary = {"steps": max_steps, "parameters": parameters, "tokens": max_steps * tokens_per_step,
               "finalLoss": next((e["loss"] for e in reversed(metrics.history) if "loss" in e), None),
               "validationLoss": next((e["validationLoss"] for e in reversed(metrics.history)
                                       if e.get("validationLoss") is not None), None),
               "processes": world, "device": device.type}
    # Every rank takes part in gathering the full weights (a collective under FSDP); rank 0 writes them.
    full_state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)) \
        if dist.is_initialized() else model.state_dict()
    if rank == 0:
        eos_token = train_data_token(data_dir, train_data.eos_id)
        model_uri = layout.model_uri(config.output_uri)
        with storage.output_dir(model_uri, last=layout.MODEL_CONFIG_FILE) as model_dir:
            export(to_huggingface(model, full_state),
                   wrap_tokenizer(data_dir / layout.TOKENIZER_FILE, eos_token), model_dir, summary=summary,
                   history=metrics.history,
                   lineage={"datasetManifestSha256": _sha256(data_dir / layout.MANIFEST_FILE),
                            "dataset": config.data_uri, **({"init": config.init.uri} if config.init else {}),
                            **config.lineage})
        report_trained(model_uri, metrics.history, summary, parameters=trainable, checkpoint=checkpoints.newest)
    barrier()
    return summary, model


def train_data_token(data_dir: Path, eos_id: int) -> str:
    from tokenizers import Tokenizer

    token = Tokenizer.from_file(str(data_dir / layout.TOKENIZER_FILE)).id_to_token(eos_id)
    return token or "<|endoftext|>"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops-pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="PretrainRunConfig as YAML or JSON")
    args = parser.parse_args(argv)
    try:
        config = load_config(PretrainRunConfig, args.config)
    except ConfigFileError as error:
        return fail("llmops-pretrain", str(error), exit_codes.CONFIG_ERROR)
    try:
        train(config)
    except Preempted as reason:
        return fail("llmops-pretrain", str(reason), exit_codes.PREEMPTED)
    except FloatingPointError as reason:
        return fail("llmops-pretrain", f"NonFiniteLoss: {reason}", exit_codes.NON_FINITE_LOSS)
    except torch.OutOfMemoryError:
        batch = config.training.batch
        return fail("llmops-pretrain", out_of_memory_advice(batch.micro_batch_size, batch.gradient_accumulation_steps,
                                                            "model.contextLength", config.model.context_length),
                    exit_codes.OUT_OF_MEMORY)
    except (storage.StorageError, FileNotFoundError, ValueError) as reason:
        return fail("llmops-pretrain", str(reason), exit_codes.CONFIG_ERROR)
    finally:
        shutdown()
    return exit_codes.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
