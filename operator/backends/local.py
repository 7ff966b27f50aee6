"""The local backend: a launch plan runs as processes on this machine (`llmops run -f`).

What a Job does in a cluster, done here with the same exit-code policy (trainer/config/exit_codes.py): a run
that exits 75 (preempted after a checkpoint) starts again from its checkpoint without counting; 65 and 78 fail
at once with the cause the workload wrote; any other failure is retried up to the plan's backoff limit. A
torchrun plan runs under torchrun with gloo, its processes capped to this machine's cores. The workload's
result and failure cause arrive on the same channel as in a pod: the termination-message file, here one per
run (`LLMOPS_TERMINATION_LOG`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.reconcile.plan import CONFIG_ARG, Launcher, LaunchPlan, RunObservation, RunState
from llmops.trainer.config import exit_codes
from llmops.trainer.config.result import TERMINATION_LOG_ENV, WorkloadResult

LOG_TAIL_BYTES = 64 * 1024
STOP_GRACE_SECONDS = 60.0
"""How long a workload may take to checkpoint after SIGTERM before it is killed (a pod's grace period)."""
INTERRUPTED = "Interrupted"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def executable(name: str) -> str:
    """A console script of this installation (next to the running Python), else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def processes(plan: LaunchPlan, cores: int) -> int:
    """Training processes of a torchrun plan here: every node's workers on this machine, at most one per core."""
    return max(1, min(plan.compute.nodes * plan.compute.processes_per_node, cores))


def command(plan: LaunchPlan, config_path: Path, cores: int) -> list[str]:
    """The command line that runs `plan` here."""
    role = plan.role
    args = [str(config_path) if a == CONFIG_ARG else a for a in role.args]
    if plan.launcher is Launcher.TORCHRUN:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                "--nproc-per-node", str(processes(plan, cores)), "--master-addr", "127.0.0.1",
                "--master-port", str(free_port()), "--no-python", executable(role.entrypoint), *args]
    return [executable(role.entrypoint), *args]


@dataclass
class LocalRun:
    """One run's processes over its attempts."""

    plan: LaunchPlan
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    started: datetime | None = None
    ended: datetime | None = None
    failed_attempts: int = 0
    state: RunState | None = None
    result: WorkloadResult | None = None
    stopping: bool = False
    exit_codes: list[int] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.directory / "output.log"

    @property
    def termination_log(self) -> Path:
        return self.directory / "termination-log"

    def log_tail(self) -> str:
        """The end of the run's output (its progress lines), as the operator reads a pod's log tail."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(max(0, self.log.stat().st_size - LOG_TAIL_BYTES))
            return f.read().decode(errors="replace")


class LocalBackend:
    """Runs plans under `store/runs/<kind>/<name>/<run>/` (config, output.log, termination-log)."""

    def __init__(self, store: Path, cores: int | None = None):
        self.store = store
        self.cores = cores or os.cpu_count() or 1
        self.runs: dict[str, LocalRun] = {}
        self.forced = False

    def run_directory(self, kind: str, name: str, plan: LaunchPlan) -> Path:
        return self.store / "runs" / kind.lower() / name / plan.run

    def observe(self, kind: str, name: str, plan: LaunchPlan) -> RunObservation:
        """Like applying a Job and reading it back: starts the run the first time, then says how it stands."""
        run = self.runs.get(plan.run)
        if run is None:
            run = self.runs[plan.run] = LocalRun(plan, self.run_directory(kind, name, plan))
            self._start(run)
        self._poll(run)
        assert run.state is not None
        return RunObservation(run.state, run.result)

    def _start(self, run: LocalRun) -> None:
        run.directory.mkdir(parents=True, exist_ok=True)
        config_path = run.directory / "config.json"
        config_path.write_text(json.dumps(run.plan.config, indent=2, sort_keys=True))
        run.termination_log.write_text("")  # as the kubelet creates it: the workload writes only if it exists
        threads = max(1, self.cores // (processes(run.plan, self.cores)
                                        if run.plan.launcher is Launcher.TORCHRUN else 1))
        env = {**os.environ, **run.plan.role.env, TERMINATION_LOG_ENV: str(run.termination_log),
               "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
        with run.log.open("ab") as log:
            # A session of its own: Ctrl-C in the terminal reaches the runner, which stops the workload in order.
            run.process = subprocess.Popen(command(run.plan, config_path, self.cores), stdout=log,
                                           stderr=subprocess.STDOUT, env=env, start_new_session=True)
        run.started = run.started or datetime.now(UTC)
        run.state = RunState(Phase.RUNNING, "Running", f"run {run.plan.run} is running (pid {run.process.pid})",
                             run.started, None, run.failed_attempts)

    def _poll(self, run: LocalRun) -> None:
        if run.process is None or (code := run.process.poll()) is None:
            return
        run.process = None
        run.exit_codes.append(code)
        now = datetime.now(UTC)
        said = run.termination_log.read_text().strip() if run.termination_log.exists() else ""
        name = run.plan.run
        if code == exit_codes.SUCCESS:
            run.result = WorkloadResult.from_message(said)
            run.ended = now
            run.state = RunState(Phase.SUCCEEDED, "Completed", f"run {name} completed", run.started, now,
                                 run.failed_attempts)
            return
        if run.stopping:
            run.state = RunState(Phase.PENDING, INTERRUPTED, f"run {name} was stopped (exit code {code}); its last "
                                 "checkpoint is kept: run again to resume", run.started, None, run.failed_attempts,
                                 stalled=True)
            return
        cause = said or _last_lines(run.log_tail())
        if code == exit_codes.PREEMPTED:  # retried for free, as the Job's podFailurePolicy does
            self._start(run)
            return
        if code in exit_codes.DO_NOT_RETRY:
            self._fail(run, exit_codes.REASONS[code], f"run {name} failed; the workload exited with code {code}: "
                       f"{cause}", now)
            return
        run.failed_attempts += 1
        if run.failed_attempts > run.plan.compute.backoff_limit:
            self._fail(run, "BackoffLimitExceeded", f"run {name} failed {run.failed_attempts} time(s), the last "
                       f"with exit code {code}: {cause}", now)
            return
        self._start(run)

    def _fail(self, run: LocalRun, reason: str, message: str, now: datetime) -> None:
        run.ended = now
        run.state = RunState(Phase.FAILED, reason, message, run.started, now, run.failed_attempts)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM to every running workload (it checkpoints, as in a pod), SIGKILL after the grace period or
        once `force()` was called (a second Ctrl-C: the signal handler only sets the flag)."""
        live = [run for run in self.runs.values() if run.process is not None]
        for run in live:
            run.stopping = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace_seconds
        for run in live:
            process = run.process
            assert process is not None
            while process.poll() is None and time.monotonic() < deadline and not self.forced:
                time.sleep(0.1)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            self._poll(run)

    def force(self) -> None:
        self.forced = True

    def run_of(self, plan_run: str) -> LocalRun | None:
        return self.runs.get(plan_run)


def _last_lines(text: str, count: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "no output"
