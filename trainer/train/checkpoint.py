"""Checkpoints with the full training state, written with torch.distributed.checkpoint (DCP).

A checkpoint directory `step-NNNNNNNN/` holds the model and optimizer state (DCP, sharded by rank when
distributed), each rank's RNG state, and `meta.json` (step, config, the run that wrote it), written last: a
checkpoint without it is incomplete and never restored. Locally it is written under a temporary name and
renamed when complete. On an object store it is written to a local staging directory, each node uploads what
its ranks wrote, then rank 0 uploads meta.json; restoring downloads the newest complete one. The schedule and
the data position are pure functions of the step, so the step restores them.

A run (layout.RUN_ENV, set by the operator and by `llmops run`) resumes only from its own checkpoints: a new
run of the resource (new spec, new inputs) starts afresh, and the first checkpoint it writes removes the
earlier runs' ones, which nothing can resume from.
"""

from __future__ import annotations

import hashlib
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

from llmops.trainer import storage
from llmops.trainer.config import layout
from llmops.trainer.config.result import CheckpointStatus

from .distributed import any_rank, barrier, local_rank

PREFIX = "step-"
META_FILE = "meta.json"


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint has been written. The run exits with the "preempted, retry" code."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def step_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


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
    def __init__(self, uri: str, keep_last: int, trainable_only: bool = False, staging: Path | None = None,
                 run: str | None = None):
        """uri: the checkpoints directory (a path or a store URI). trainable_only: leave frozen weights out (a
        LoRA checkpoint holds only the adapters). staging: where a store's checkpoints are written and restored
        on this node (default: under storage.cache_dir). run: this run's name; without one (a workload started by
        hand) any complete checkpoint is resumed from."""
        self.run = run
        self.uri, self.keep_last = uri.rstrip("/"), keep_last
        self.local = layout.local_path(uri) if layout.is_local(uri) else None
        self.staging = self.local or staging or storage.cache_dir("checkpoints") / hashlib.sha256(
            uri.encode()).hexdigest()[:16]
        self.options = StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)
        self.newest: CheckpointStatus | None = None
        """The newest complete checkpoint this run wrote or restored."""

    def _state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], ...]:
        model_state, optim_state = get_state_dict(model, optimizer, options=self.options)
        if self.options.ignore_frozen_params:  # DCP keeps a frozen weight that is tied to another (lm_head)
            frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
            model_state = {k: v for k, v in model_state.items() if k not in frozen}
        return model_state, optim_state

    def _step_uri(self, name: str) -> str:
        return layout.join(self.uri, name)

    def _all_complete(self) -> list[str]:
        """Names of every complete checkpoint (those with meta.json), whichever run wrote it, oldest first."""
        if self.local is not None:
            if not self.local.is_dir():
                return []
            return sorted(p.name for p in self.local.iterdir()
                          if p.name.startswith(PREFIX) and (p / META_FILE).exists())
        return sorted(name.split("/")[0] for name in storage.listing(self.uri)
                      if name.startswith(PREFIX) and name.count("/") == 1 and name.endswith(f"/{META_FILE}"))

    def _written_by(self, name: str) -> str | None:
        meta_uri = layout.join(self._step_uri(name), META_FILE)
        if self.local is not None:
            text = (self.local / name / META_FILE).read_text()
        else:
            with storage.open(meta_uri, "rt") as meta:
                text = meta.read()
        return json.loads(text).get("run")

    def _ours(self, names: list[str]) -> tuple[list[str], list[str]]:
        """(this run's checkpoints, other runs') among `names`."""
        if self.run is None:
            return names, []
        ours = [n for n in names if self._written_by(n) == self.run]
        return ours, [n for n in names if n not in ours]

    def complete(self) -> list[str]:
        """Names of this run's complete checkpoints, oldest first (every one when the run is unnamed)."""
        return self._ours(self._all_complete())[0]

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> str:
        """Write the checkpoint of `step` (a collective: every rank calls it); returns its URI."""
        name = step_name(step)
        partial = self.staging / f".{name}.partial"
        # A local (possibly shared) directory is prepared once; a store's staging directory once per node.
        if (_rank() if self.local is not None else local_rank()) == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        if self.local is None and _rank() == 0:
            storage.delete(self._step_uri(name))  # a stale upload of the same step (a run resumed from before it)
        barrier()
        model_state, optim_state = self._state(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(partial))
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        torch.save({"torch": torch.get_rng_state(), "cuda": cuda_rng}, partial / f"rng-{_rank()}.pt")
        barrier()
        if self.local is None and local_rank() == 0:
            storage.upload_files(partial, self._step_uri(name))
        barrier()
        if _rank() == 0:
            run = {"run": self.run} if self.run else {}
            (partial / META_FILE).write_text(json.dumps({"step": step, **run, **meta}, indent=2))
            self._publish(partial, name)
            self._prune()
        barrier()
        if self.local is None and local_rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
        self.newest = CheckpointStatus(step=step, uri=self._step_uri(name))
        return self.newest.uri

    def _publish(self, partial: Path, name: str) -> None:
        """Make the checkpoint whole where readers look: a rename here, meta.json last on a store."""
        if self.local is not None:
            shutil.rmtree(self.local / name, ignore_errors=True)
            partial.rename(self.local / name)
        else:
            storage.put_file(partial / META_FILE, layout.join(self._step_uri(name), META_FILE))

    def _prune(self) -> None:
        """Keep this run's newest keep_last complete checkpoints and none of other runs'; meta.json goes first, so
        a half-deleted one is incomplete rather than corrupt."""
        ours, others = self._ours(self._all_complete())
        for old in [*others, *ours[: -self.keep_last]]:
            if self.local is not None:
                (self.local / old / META_FILE).unlink(missing_ok=True)
                shutil.rmtree(self.local / old, ignore_errors=True)
            else:
                storage.delete(layout.join(self._step_uri(old), META_FILE))
                storage.delete(self._step_uri(old))

    def end_of_step(self, done: int, max_steps: int, interval: int, stop_requested: bool, device: torch.device,
                    model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
        """Checkpoint every `interval` steps, at the last step (so a finished run keeps its final state), and
        when any rank was asked to stop, then raise Preempted. The ranks agree first: a drain may signal one
        node only, and saving is a collective."""
        preempted = any_rank(stop_requested, device)
        if done % interval == 0 or done == max_steps or preempted:
            self.save(done, model, optimizer, meta)
        if preempted:
            raise Preempted(f"SIGTERM at step {done}: checkpoint written")

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
        """Load the newest complete checkpoint into model and optimizer; return its step (0 if none)."""
        checkpoints = self.complete()
        if not checkpoints:
            return 0
        name = checkpoints[-1]
        if self.local is not None:
            latest = self.local / name
        else:  # each node downloads once; its other ranks find the copy in the cache
            cache = self.staging / "restored"
            if local_rank() == 0:
                storage.stage_in(self._step_uri(name), "checkpoint", require=META_FILE, cache=cache)
            barrier()
            latest = storage.stage_in(self._step_uri(name), "checkpoint", require=META_FILE, cache=cache)
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
        step = int(json.loads((latest / META_FILE).read_text())["step"])
        if self.local is None:  # loaded: the downloaded copy is not needed again
            barrier()
            if local_rank() == 0:
                shutil.rmtree(self.staging / "restored", ignore_errors=True)
        self.newest = CheckpointStatus(step=step, uri=self._step_uri(name))
        return step
