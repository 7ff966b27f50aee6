"""Checkpoints with the full training state, written with torch.distributed.checkpoint (DCP).

A checkpoint directory `step-NNNNNNNN/` holds the model and optimizer state (DCP, sharded by rank when
distributed), each rank's RNG state, and `meta.json` (step, config). It is written under a temporary name and
renamed when complete, so a crash mid-write never leaves a checkpoint that looks whole. The schedule and the
data position are pure functions of the step, so the step restores them.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from .distributed import any_rank

PREFIX = "step-"


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint has been written. The run exits with the "preempted, retry" code."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def sigterm_requests(enabled: bool) -> Iterator[dict[str, bool]]:
    """While inside, SIGTERM only sets `["requested"]`: the loop checkpoints at the end of the step and stops
    (Checkpointer.end_of_step). Disabled: SIGTERM keeps its default effect."""
    stop = {"requested": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True)) if enabled else None
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Checkpointer:
    def __init__(self, directory: Path, keep_last: int, trainable_only: bool = False):
        """trainable_only: leave frozen weights out (a LoRA checkpoint holds only the adapters)."""
        self.directory, self.keep_last = directory, keep_last
        self.options = StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)

    def _state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], ...]:
        model_state, optim_state = get_state_dict(model, optimizer, options=self.options)
        if self.options.ignore_frozen_params:  # DCP keeps a frozen weight that is tied to another (lm_head)
            frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
            model_state = {k: v for k, v in model_state.items() if k not in frozen}
        return model_state, optim_state

    def complete(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(PREFIX) and (p / "meta.json").exists())

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> Path:
        final = self.directory / f"{PREFIX}{step:08d}"
        partial = self.directory / f".{final.name}.partial"
        if _rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        _barrier()
        model_state, optim_state = self._state(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(partial))
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        rng = {"torch": torch.get_rng_state(), "cuda": cuda_rng}
        torch.save(rng, partial / f"rng-{_rank()}.pt")
        _barrier()
        if _rank() == 0:
            (partial / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=2))
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            for old in self.complete()[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return final

    def end_of_step(self, done: int, max_steps: int, interval: int, stop_requested: bool, device: torch.device,
                    model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
        """Checkpoint every `interval` steps, and when any rank was asked to stop, then raise Preempted. The
        ranks agree first: a drain may signal one node only, and saving is a collective."""
        preempted = any_rank(stop_requested, device)
        if (done % interval == 0 and done < max_steps) or preempted:
            self.save(done, model, optimizer, meta)
        if preempted:
            raise Preempted(f"SIGTERM at step {done}: checkpoint written")

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
        """Load the newest complete checkpoint into model and optimizer; return its step (0 if none)."""
        checkpoints = self.complete()
        if not checkpoints:
            return 0
        latest = checkpoints[-1]
        model_state, optim_state = self._state(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(latest))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=self.options)
        rng_file = latest / f"rng-{_rank()}.pt"
        if rng_file.exists():
            rng = torch.load(rng_file, weights_only=False)
            torch.set_rng_state(rng["torch"])
            if rng["cuda"]:
                torch.cuda.set_rng_state_all(rng["cuda"])
        return int(json.loads((latest / "meta.json").read_text())["step"])
