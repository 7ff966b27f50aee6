"""The whole lifecycle through `llmops run`, as a user runs it: Dataset -> PretrainJob -> FineTune -> Evaluation
gate -> a served completion, on the small manifests next to this file (the demo's, sized for a test)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.operator.api.v1alpha1 import Dataset, Deployment, Evaluation, FineTune, PretrainJob
from llmops.trainer.config.result import WorkloadResult

LIFECYCLE = Path(__file__).parent / "lifecycle"
MODELS = {"Dataset": Dataset, "PretrainJob": PretrainJob, "FineTune": FineTune, "Evaluation": Evaluation,
          "Deployment": Deployment}
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "model-card.md", "lineage.json",
               "loss-curve.png")

pytestmark = pytest.mark.slow


def llmops(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_executable(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _executable() -> str:
    found = shutil.which("llmops", path=str(Path(sys.executable).parent))
    assert found, "the console script `llmops` is installed with the package"
    return found


def names() -> dict[str, str]:
    """Kind -> name of each manifest in the test lifecycle."""
    out = {}
    for file in sorted(LIFECYCLE.glob("*.yaml")):
        document = yaml.safe_load(file.read_text())
        out[document["kind"]] = document["metadata"]["name"]
    return out


def saved(store: Path, kind: str) -> dict[str, Any]:
    return yaml.safe_load((store / "resources" / kind.lower() / f"{names()[kind]}.yaml").read_text())


def test_the_whole_lifecycle_runs_locally_gated_and_served(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = llmops("run", "-f", LIFECYCLE, "--store", store)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output

    # Every status is saved exactly as .status would be in a cluster: the API models read each back.
    bodies = {kind: saved(store, kind) for kind in MODELS}
    for kind, body in bodies.items():
        MODELS[kind].model_validate(body)
    for kind in ("Dataset", "PretrainJob", "FineTune", "Evaluation"):
        status = bodies[kind]["status"]
        assert status["phase"] == "Succeeded", (kind, status)
        assert {c["type"]: c["status"] for c in status["conditions"]}["Succeeded"] == "True"
        assert Path(status["artifactUri"]).exists(), (kind, status["artifactUri"])
        assert status["artifactUri"].startswith(str(store.resolve() / "artifacts")), "artifacts go to the store"

    data = Path(bodies["Dataset"]["status"]["artifactUri"])
    assert (data / "manifest.json").is_file() and (data / "tokenizer.json").is_file()
    for kind in ("PretrainJob", "FineTune"):
        model = Path(bodies[kind]["status"]["artifactUri"])
        assert [f for f in MODEL_FILES if not (model / f).is_file()] == [], kind
        assert bodies[kind]["status"]["progress"]["percent"] == "100%"
        assert bodies[kind]["status"]["metrics"]["loss"] > 0
        # The result channel: the workload's own word on where its model is and its final losses.
        (said,) = (store / "runs" / kind.lower() / names()[kind]).glob("*/termination-log")
        result = WorkloadResult.from_message(said.read_text())
        assert result is not None and result.artifact_uri == str(model) and result.metrics["loss"] > 0

    # The gate: a Passed verdict for the very model served, every threshold held, the same as results.json.
    evaluation = bodies["Evaluation"]["status"]
    assert evaluation["verdict"] == "Passed"
    assert evaluation["modelUri"] == bodies["FineTune"]["status"]["artifactUri"]
    assert all(r["passed"] for r in evaluation["results"] if "passed" in r)
    on_disk = json.loads(Path(evaluation["artifactUri"]).read_text())
    assert on_disk["verdict"] == "Passed" and len(on_disk["results"]) == len(evaluation["results"])

    # Served: the gate's verdict recorded on the revision, the URL printed, a completion answered and printed.
    deployment = bodies["Deployment"]["status"]
    conditions = {c["type"]: c for c in deployment["conditions"]}
    assert conditions["Gated"]["status"] == "True" and conditions["Gated"]["reason"] == "EvaluationPassed"
    assert deployment["history"][0]["modelUri"] == bodies["FineTune"]["status"]["artifactUri"]
    assert f"serving '{names()['Deployment']}' at http://127.0.0.1:" in output
    completion = next(line for line in output.splitlines() if "/v1/completions" in line)
    assert "-> ''" not in completion, completion
    assert "happen in a cluster" in output, "what only a cluster does is said, not skipped"

    # The summary names the artifacts, the model card, the loss plot and the verdict.
    for text in ("model-card.md", "loss-curve.png", "Passed"):
        assert text in run.stdout, text

    # kubectl-style reading of the store.
    listed = llmops("get", "--store", store)
    assert listed.returncode == 0, listed.stderr
    for name in names().values():
        assert name in listed.stdout
    described = llmops("describe", f"Evaluation/{names()['Evaluation']}", "--store", store)
    assert described.returncode == 0 and "Passed" in described.stdout, described.stderr

    # Nothing changed: a second run skips every workload, as a controller that sees nothing to do.
    again = llmops("run", "-f", LIFECYCLE, "--store", store)
    assert again.returncode == 0, again.stdout + again.stderr
    for kind in ("Dataset", "PretrainJob", "FineTune", "Evaluation"):
        assert f"{kind}/{names()[kind]}: unchanged" in again.stdout + again.stderr

    # --serve keeps the server up until Ctrl-C; it answers an OpenAI-style request meanwhile, and is gone after.
    url = _serve_until_ctrl_c(store)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/readyz", timeout=2)

    # A gate the model cannot pass: only the changed Evaluation runs again, its verdict is Failed, and the model
    # is not served; the run says which threshold failed.
    changed = _copy_with_evaluation(tmp_path / "changed", {"task": _perplexity_task(), "metric": "perplexity",
                                                           "max": 1.0})
    gated = llmops("run", "-f", changed, "--store", store)
    said = gated.stdout + gated.stderr
    assert gated.returncode == 1, said
    for kind in ("Dataset", "PretrainJob", "FineTune"):
        assert f"{kind}/{names()[kind]}: unchanged" in said
    assert saved(store, "Evaluation")["status"]["verdict"] == "Failed"
    assert "not served" in said and f"{_perplexity_task()}/perplexity" in said and "needs <= 1.0" in said
    gate = {c["type"]: c for c in saved(store, "Deployment")["status"]["conditions"]}["Gated"]
    assert gate["status"] == "False" and gate["reason"] == "EvaluationFailed"
    assert "/v1/completions" not in said


def _serve_until_ctrl_c(store: Path) -> str:
    """Run with --serve, ask the server for a completion while it serves, then Ctrl-C; the server's URL."""
    runner = subprocess.Popen([_executable(), "run", "-f", str(LIFECYCLE), "--store", str(store), "--serve"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert runner.stdout is not None
    url = None
    try:
        for line in runner.stdout:
            if found := re.search(r"serving '[^']+' at (http://127\.0\.0\.1:\d+)/v1", line):
                url = found.group(1)
            if "serving until Ctrl-C" in line:
                break
        assert url, "the served URL is printed"
        request = urllib.request.Request(f"{url}/v1/completions", method="POST", headers={
            "Content-Type": "application/json"}, data=json.dumps({"model": names()["Deployment"], "prompt": "A",
                                                                  "max_tokens": 4}).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            assert json.loads(response.read())["choices"][0]["text"] is not None
    finally:
        runner.send_signal(signal.SIGINT)
        rest, _ = runner.communicate(timeout=120)
    assert runner.returncode == 0, rest
    return url


def _perplexity_task() -> str:
    evaluation = yaml.safe_load((LIFECYCLE / "04-evaluation.yaml").read_text())
    return next(t["name"] for t in evaluation["spec"]["tasks"] if t["type"] == "perplexity")


def _copy_with_evaluation(folder: Path, threshold: dict[str, Any]) -> Path:
    """The test lifecycle in `folder` with the Evaluation's thresholds replaced; its data linked, so every other
    resource resolves to the very same inputs."""
    folder.mkdir()
    for entry in LIFECYCLE.iterdir():
        if entry.suffix == ".yaml":
            shutil.copy(entry, folder / entry.name)
        elif not entry.name.startswith((".", "__")):
            (folder / entry.name).symlink_to(entry.resolve())
    evaluation = yaml.safe_load((folder / "04-evaluation.yaml").read_text())
    evaluation["spec"]["thresholds"] = [threshold]
    (folder / "04-evaluation.yaml").write_text(yaml.safe_dump(evaluation))
    return folder


def _wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _train_steps(log: str) -> list[int]:
    steps = []
    for line in log.splitlines():
        if line.startswith("{") and '"event": "train"' in line:
            document = json.loads(line)
            if "loss" in document:
                steps.append(int(document["step"]))
    return steps


def test_ctrl_c_during_pretraining_checkpoints_and_a_rerun_resumes_there_and_skips_the_dataset(
        tmp_path: Path) -> None:
    store = tmp_path / "store"
    upto_pretraining = [LIFECYCLE / "01-dataset.yaml", LIFECYCLE / "02-pretrainjob.yaml"]
    args = [a for f in upto_pretraining for a in ("-f", str(f))]
    runner = subprocess.Popen([_executable(), "run", *args, "--store", str(store)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    resource = store / "resources" / "pretrainjob" / f"{names()['PretrainJob']}.yaml"

    def training() -> bool:
        if not resource.exists():
            return False
        status = (yaml.safe_load(resource.read_text()) or {}).get("status") or {}
        return status.get("phase") == "Running" and (status.get("progress") or {}).get("completed", 0) >= 1

    try:
        _wait_for(training, 600, "the PretrainJob to report its first steps")
    finally:
        runner.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
    output, _ = runner.communicate(timeout=180)
    assert runner.returncode == 130, output

    status = yaml.safe_load(resource.read_text())["status"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert status["phase"] == "Pending" and ready["reason"] == "Interrupted", status
    output_root = Path(status["artifactUri"] if status.get("artifactUri") else
                       store / "artifacts" / "default" / "pretrainjobs" / names()["PretrainJob"])
    checkpoints = sorted((output_root / "checkpoints").glob("step-*"))
    assert checkpoints, "SIGTERM wrote a checkpoint"
    checkpointed = int(checkpoints[-1].name.removeprefix("step-"))
    log = next((store / "runs" / "pretrainjob" / names()["PretrainJob"]).glob("*/output.log"))
    before = log.read_text()
    assert max(_train_steps(before)) <= checkpointed

    rerun = llmops("run", *args, "--store", store)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"Dataset/{names()['Dataset']}: unchanged" in rerun.stdout
    resumed = _train_steps(log.read_text()[len(before):])
    assert resumed and min(resumed) > checkpointed, (checkpointed, resumed)
    assert saved(store, "PretrainJob")["status"]["phase"] == "Succeeded"

    # --force runs it again as a new run (generation 2) from step 1: the earlier checkpoints are set aside, kept.
    forced = llmops("run", *args, "--store", store, "--force", f"PretrainJob/{names()['PretrainJob']}")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    again = saved(store, "PretrainJob")
    assert again["metadata"]["generation"] == 2 and again["status"]["phase"] == "Succeeded"
    assert again["status"]["jobName"].endswith("-2")
    assert (output_root / "checkpoints.previous-1").is_dir()
    (second,) = (store / "runs" / "pretrainjob" / names()["PretrainJob"]).glob("*-2/output.log")
    assert min(_train_steps(second.read_text())) <= 10, "a forced run starts from scratch"
