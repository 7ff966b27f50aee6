"""The local backend runs a launch plan as processes with the cluster's exit-code policy: 75 restarts for
free, 65 and 78 fail at once with the cause the workload wrote, anything else is retried up to the backoff
limit, and a stopped run waits to be resumed. The workloads here are tiny scripts whose attempts follow a
script of steps."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops.operator.api.v1alpha1.common import ImageSpec, Phase
from llmops.operator.backends.local import LocalBackend
from llmops.operator.reconcile.plan import CONFIG_ARG, Compute, Launcher, LaunchPlan, RunObservation, plan_app
from llmops.trainer.config import exit_codes
from llmops.trainer.config.result import TERMINATION_LOG_ENV, WorkloadResult

KIND, NAME = "FineTune", "fake"
FINAL = (Phase.SUCCEEDED, Phase.FAILED)

WORKLOAD = """#!{python}
# A fake workload: attempt N follows steps[N-1] of steps.json beside it (the last step repeats).
import json, os, signal, sys, time
from pathlib import Path

here = Path(__file__).parent
counter = here / "attempts"
attempt = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(attempt))
steps = json.loads((here / "steps.json").read_text())
step = steps[min(attempt, len(steps)) - 1]

record = {{"argv": sys.argv[1:], "termination_log": os.environ.get("{env}")}}
if "--config" in sys.argv:
    record["config"] = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
(here / f"attempt-{{attempt}}.json").write_text(json.dumps(record))

for line in step.get("print", []):
    print(line)
if "message" in step:
    Path(os.environ["{env}"]).write_text(step["message"])
if "sleep" in step:
    def on_term(signum, frame):
        (here / "checkpointed").write_text(str(attempt))
        sys.exit(step.get("on_sigterm", 75))
    signal.signal(signal.SIGTERM, signal.SIG_IGN if step.get("ignore_sigterm") else on_term)
    (here / "ready").write_text(str(attempt))
    time.sleep(step["sleep"])
sys.exit(step.get("exit", 0))
"""


class Workload:
    """A fake workload in a folder of its own: its script, its steps, what each attempt saw."""

    def __init__(self, directory: Path, steps: list[dict[str, Any]]):
        directory.mkdir(parents=True)
        self.directory = directory
        self.script = directory / "workload.py"
        self.script.write_text(WORKLOAD.format(python=sys.executable, env=TERMINATION_LOG_ENV))
        self.script.chmod(0o755)
        (directory / "steps.json").write_text(json.dumps(steps))

    @property
    def attempts(self) -> int:
        counter = self.directory / "attempts"
        return int(counter.read_text()) if counter.exists() else 0

    def attempt(self, number: int) -> dict[str, Any]:
        return json.loads((self.directory / f"attempt-{number}.json").read_text())

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.directory / "ready").exists():
            assert time.monotonic() < deadline, "the workload did not start"
            time.sleep(0.02)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "store", cores=2)
    yield backend
    backend.stop(grace_seconds=1)  # nothing outlives a test, whatever it asserted


def workload(tmp_path: Path, *steps: dict[str, Any]) -> Workload:
    return Workload(tmp_path / "workload", list(steps))


def plan_for(fake: Workload, backoff_limit: int = 0) -> LaunchPlan:
    return LaunchPlan(suffix="abc", number=1,
                      app=plan_app(NAME, "trainer", "trainer:test", entrypoint=str(fake.script)),
                      launcher=Launcher.PROCESS, config={"x": 1}, reads={}, writes="/tmp/unused",
                      artifact_uri="/tmp/unused", compute=Compute(image=ImageSpec(), backoff_limit=backoff_limit))


def until_final(backend: LocalBackend, plan: LaunchPlan, timeout: float = 20.0) -> RunObservation:
    deadline = time.monotonic() + timeout
    while (observed := backend.observe(KIND, NAME, plan)).state.phase not in FINAL:
        assert time.monotonic() < deadline, f"still {observed.state.phase} after {timeout}s: {observed.state}"
        time.sleep(0.02)
    return observed


class TestSuccess:
    def test_a_preempted_run_restarts_for_free_and_its_result_is_read_back(
            self, tmp_path: Path, backend: LocalBackend) -> None:
        result = WorkloadResult(verdict="Passed", artifact_uri="/models/fake")
        fake = workload(tmp_path, {"exit": exit_codes.PREEMPTED}, {"message": result.to_message(), "exit": 0})
        plan = plan_for(fake, backoff_limit=0)  # no retry allowed: a preemption is not a failure
        observed = until_final(backend, plan)
        assert observed.state.phase is Phase.SUCCEEDED and observed.state.reason == "Completed"
        assert observed.state.failed_pods == 0
        assert observed.result == result
        assert fake.attempts == 2
        assert backend.run_of(plan.run).exit_codes == [exit_codes.PREEMPTED, 0]

    def test_a_success_without_a_result_reads_back_no_result(self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"print": ["done"], "exit": 0})
        observed = until_final(backend, plan_for(fake))
        assert observed.state.phase is Phase.SUCCEEDED and observed.result is None

    def test_a_failure_within_the_backoff_limit_is_retried_and_counted(
            self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"exit": 1}, {"exit": 0})
        observed = until_final(backend, plan_for(fake, backoff_limit=1))
        assert observed.state.phase is Phase.SUCCEEDED and observed.state.failed_pods == 1
        assert fake.attempts == 2

    def test_observing_a_finished_run_again_does_not_start_it_again(
            self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"exit": 0})
        plan = plan_for(fake)
        first = until_final(backend, plan)
        assert backend.observe(KIND, NAME, plan) == first
        assert fake.attempts == 1


class TestFailure:
    @pytest.mark.parametrize(("code", "reason"), [(exit_codes.CONFIG_ERROR, "ConfigError"),
                                                  (exit_codes.NON_FINITE_LOSS, "NonFiniteLoss")])
    def test_a_do_not_retry_code_fails_at_once_with_the_cause_written(
            self, tmp_path: Path, backend: LocalBackend, code: int, reason: str) -> None:
        cause = "data.uri s3://bucket/x.jsonl cannot be read: NoSuchBucket"
        fake = workload(tmp_path, {"print": ["loading"], "message": cause, "exit": code}, {"exit": 0})
        observed = until_final(backend, plan_for(fake, backoff_limit=3))
        assert observed.state.phase is Phase.FAILED and observed.state.reason == reason
        assert cause in observed.state.message and f"code {code}" in observed.state.message
        assert observed.result is None
        assert fake.attempts == 1

    def test_other_failures_are_retried_up_to_the_backoff_limit_then_backoff_limit_exceeded(
            self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"print": ["step 1 loss 2.31", "Traceback: boom"], "exit": 1},
                        {"print": ["step 1 loss 2.29", "RuntimeError: out of memory"], "exit": 1}, {"exit": 0})
        observed = until_final(backend, plan_for(fake, backoff_limit=1))
        assert observed.state.phase is Phase.FAILED and observed.state.reason == "BackoffLimitExceeded"
        assert observed.state.failed_pods == 2 and fake.attempts == 2
        assert "2 time(s)" in observed.state.message and "exit code 1" in observed.state.message
        # No cause was written, so the message carries the last output lines, the last attempt's last.
        assert observed.state.message.endswith("step 1 loss 2.29 | RuntimeError: out of memory")

    def test_a_written_cause_is_preferred_to_the_output(self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"print": ["noise"], "message": "shard 3 is truncated", "exit": 2})
        observed = until_final(backend, plan_for(fake))
        assert observed.state.reason == "BackoffLimitExceeded"
        assert observed.state.message.endswith("shard 3 is truncated") and "noise" not in observed.state.message

    def test_a_silent_failure_says_there_was_no_output(self, tmp_path: Path, backend: LocalBackend) -> None:
        observed = until_final(backend, plan_for(workload(tmp_path, {"exit": 3})))
        assert observed.state.message.endswith("exit code 3: no output")

    def test_each_attempt_starts_with_an_empty_termination_log(self, tmp_path: Path, backend: LocalBackend) -> None:
        # The first attempt's cause must not be taken for the second's.
        fake = workload(tmp_path, {"message": "first cause", "exit": 1}, {"print": ["second output"], "exit": 1})
        observed = until_final(backend, plan_for(fake, backoff_limit=1))
        assert "first cause" not in observed.state.message and observed.state.message.endswith("second output")


class TestLaunch:
    def test_the_config_is_written_as_json_and_its_path_replaces_the_placeholder(
            self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"exit": 0})
        plan = plan_for(fake)
        assert plan.role.args == ["--config", CONFIG_ARG]
        until_final(backend, plan)
        directory = backend.run_directory(KIND, NAME, plan)
        assert directory == tmp_path / "store" / "runs" / "finetune" / NAME / plan.run
        config = directory / "config.json"
        assert json.loads(config.read_text()) == {"x": 1}
        seen = fake.attempt(1)
        assert seen["argv"] == ["--config", str(config)]
        assert seen["config"] == {"x": 1}  # there before the workload started
        assert seen["termination_log"] == str(directory / "termination-log")

    def test_the_output_of_every_attempt_is_kept_in_the_run_log(self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"print": ["first attempt"], "exit": exit_codes.PREEMPTED},
                        {"print": ["second attempt"], "exit": 0})
        plan = plan_for(fake)
        until_final(backend, plan)
        log = backend.run_of(plan.run).log_tail()
        assert log.index("first attempt") < log.index("second attempt")

    def test_a_running_workload_reads_as_running(self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"sleep": 30})
        plan = plan_for(fake)
        observed = backend.observe(KIND, NAME, plan)
        assert observed.state.phase is Phase.RUNNING and observed.state.start_time is not None
        fake.wait_ready()
        assert backend.observe(KIND, NAME, plan).state.phase is Phase.RUNNING


class TestStop:
    def test_a_stopped_run_checkpoints_on_sigterm_and_reads_as_interrupted(
            self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"sleep": 30, "on_sigterm": exit_codes.PREEMPTED})
        plan = plan_for(fake)
        backend.observe(KIND, NAME, plan)
        fake.wait_ready()
        started = time.monotonic()
        backend.stop(grace_seconds=10)
        assert time.monotonic() - started < 5  # it exited on SIGTERM, not at the end of the grace period
        assert (fake.directory / "checkpointed").read_text() == "1"
        state = backend.observe(KIND, NAME, plan).state
        assert state.phase is Phase.PENDING and state.reason == "Interrupted" and state.stalled
        assert "run again to resume" in state.message
        assert fake.attempts == 1  # exit 75 after a stop is not restarted
        assert backend.observe(KIND, NAME, plan).state == state

    def test_a_workload_that_ignores_sigterm_is_killed_after_the_grace_period(
            self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"sleep": 30, "ignore_sigterm": True})
        plan = plan_for(fake)
        backend.observe(KIND, NAME, plan)
        fake.wait_ready()
        started = time.monotonic()
        backend.stop(grace_seconds=0.5)
        assert time.monotonic() - started < 5
        state = backend.observe(KIND, NAME, plan).state
        assert state.phase is Phase.PENDING and state.reason == "Interrupted"
        assert backend.run_of(plan.run).exit_codes == [-9]

    def test_force_during_the_grace_period_kills_at_once(self, tmp_path: Path, backend: LocalBackend) -> None:
        """A second Ctrl-C: the signal handler only calls force(); the waiting stop() then kills."""
        fake = workload(tmp_path, {"sleep": 30, "ignore_sigterm": True})
        plan = plan_for(fake)
        backend.observe(KIND, NAME, plan)
        fake.wait_ready()
        threading.Timer(0.3, backend.force).start()
        started = time.monotonic()
        backend.stop(grace_seconds=60)
        assert time.monotonic() - started < 10
        assert backend.run_of(plan.run).exit_codes == [-9]

    def test_stop_leaves_finished_runs_as_they_are(self, tmp_path: Path, backend: LocalBackend) -> None:
        fake = workload(tmp_path, {"exit": 0})
        plan = plan_for(fake)
        until_final(backend, plan)
        backend.stop(grace_seconds=1)
        assert backend.observe(KIND, NAME, plan).state.phase is Phase.SUCCEEDED
