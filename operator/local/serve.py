"""A Deployment, locally: the same gate as in a cluster, then one model server on 127.0.0.1.

The gate (`serving/gate.py`) decides exactly as the operator does: the model is served only when its Evaluation
Passed for the very artifact served. A served model answers one smoke completion, printed; with `--serve` it
keeps serving until Ctrl-C (SIGTERM: the server drains). What only a cluster does is said, not skipped quietly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from llmops.operator.api.v1alpha1.deployment import Deployment, DeploymentPhase, DeploymentStatus, Outcome, Revision
from llmops.operator.backends.local import executable, free_port
from llmops.operator.reconcile.conditions import set_condition
from llmops.operator.reconcile.serving import gate
from llmops.operator.reconcile.serving.revisions import server_config
from llmops.operator.reconcile.training import model_run, resolve_model
from llmops.operator.reconcile.workload import Event

from .manifests import Loaded
from .store import write_atomically

if TYPE_CHECKING:
    from .runner import Runner

DEFAULT_PROMPT = "ROMEO:"
SMOKE_MAX_TOKENS = 32
CLUSTER_ONLY = ("local mode serves one replica of one revision: replicas ({replicas}), canary steps and traffic "
                "weights, analysis and rollback happen in a cluster")


def _status(deployment: Deployment) -> DeploymentStatus:
    return (deployment.status or DeploymentStatus()).model_copy(deep=True)


def _save(runner: Runner, item: Loaded, status: DeploymentStatus, events: list[Event]) -> None:
    body = {"apiVersion": item.resource.api_version, "kind": item.resource.kind,
            "metadata": {"name": item.resource.metadata.name, "namespace": item.resource.metadata.namespace,
                         "generation": item.resource.metadata.generation or 1,
                         "annotations": {"llmops.dev/manifest": str(item.file)}},
            "spec": item.resource.spec.to_wire(), "status": status.to_wire()}
    runner._save(item, body, events, runner.clock())


def serve(runner: Runner, item: Loaded) -> int:
    """Gate, start the server, send the smoke completion; 0 when it answered, 1 when the gate or server failed."""
    deployment = item.resource
    assert isinstance(deployment, Deployment)
    refs, now, status = runner.refs(), runner.clock(), _status(deployment)
    generation = deployment.metadata.generation or 1
    model = resolve_model(deployment.spec.model, refs)
    if not model.ready or not model.artifact_uri:
        set_condition(status.conditions, "Ready", False, "ModelNotReady", model.message, now, generation)
        status.phase = DeploymentPhase.WAITING
        _save(runner, item, status, [Event("Warning", "ModelNotReady", model.message)])
        return 1
    name = deployment.spec.gate.evaluation
    verdict = gate.check(name, refs.get(("Evaluation", name)), model.artifact_uri, model_run(deployment.spec.model,
                                                                                            refs))
    set_condition(status.conditions, "Gated", verdict.passed, verdict.reason.value, verdict.message, now, generation)
    status.observed_generation = generation
    if not verdict.passed:
        status.phase = DeploymentPhase.WAITING
        set_condition(status.conditions, "Ready", False, verdict.reason.value, verdict.message, now, generation)
        _save(runner, item, status, [Event("Warning", verdict.reason.value, verdict.message)])
        runner.display.log(f"{item.title}: not served: {verdict.message}")
        return 1
    return _run_server(runner, item, deployment, status, model.artifact_uri, verdict)


def _run_server(runner: Runner, item: Loaded, deployment: Deployment, status: DeploymentStatus, model_uri: str,
                verdict: gate.GateResult) -> int:
    directory = runner.store.root / "runs" / "deployment" / deployment.metadata.name / "server"
    config_path = directory / "config.json"
    write_atomically(config_path, json.dumps(server_config(deployment), indent=2))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = directory / "output.log"
    with log.open("ab") as out:
        process = subprocess.Popen([executable("llmops-serve"), "--model", model_uri, "--config", str(config_path),
                                    "--host", "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    now, generation = runner.clock(), deployment.metadata.generation or 1
    try:
        if not _wait_ready(url, process, deployment.spec.server.startup_seconds, lambda: runner.interrupted):
            message = f"the model server did not become ready; see {log}"
            set_condition(status.conditions, "Ready", False, "ServerNotReady", message, now, generation)
            _save(runner, item, status, [Event("Warning", "ServerNotReady", message)])
            return 1
        served = deployment.spec.server.served_model_name or deployment.metadata.name
        status.phase, status.url, status.replicas, status.ready_replicas = DeploymentPhase.AVAILABLE, url, 1, 1
        status.current_revision, status.traffic = 1, "r1=100"
        status.history = [Revision(revision=1, digest="local", model_uri=model_uri,
                                   model_run=model_run(deployment.spec.model, runner.refs()),
                                   image="local", evaluation=deployment.spec.gate.evaluation, outcome=Outcome.STABLE,
                                   metrics=verdict.metrics, generation=generation, created_at=now, deployed_at=now)]
        set_condition(status.conditions, "Ready", True, "Serving", f"serving {served} at {url}/v1", now, generation)
        _save(runner, item, status, [Event("Normal", "Serving", f"serving {served} at {url}/v1")])
        runner.display.log(f"{item.title}: serving {served!r} at {url}/v1 (OpenAI-compatible)")
        runner.display.log(f"{item.title}: {CLUSTER_ONLY.format(replicas=deployment.spec.replicas)}")
        prompt = runner.options.prompt or DEFAULT_PROMPT
        completion = smoke_completion(url, served, prompt)
        runner.display.log(f"{item.title}: POST {url}/v1/completions {{prompt: {prompt!r}}} -> {completion!r}")
        if runner.options.serve:
            runner.display.log(f"{item.title}: serving until Ctrl-C")
            while not runner.interrupted and process.poll() is None:
                time.sleep(0.5)
        return 0
    finally:
        _stop(process)
        if status.phase == DeploymentPhase.AVAILABLE:
            status.phase, status.ready_replicas = DeploymentPhase.WAITING, 0
            message = "the local server stopped with the run; `llmops run --serve` keeps it up"
            set_condition(status.conditions, "Ready", False, "Stopped", message, runner.clock(), generation)
            _save(runner, item, status, [])


def _wait_ready(url: str, process: subprocess.Popen[bytes], seconds: int, interrupted: Any) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None and not interrupted():
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


def smoke_completion(url: str, model: str, prompt: str) -> str:
    """One greedy completion of `prompt` over the OpenAI-compatible API; its text."""
    request = urllib.request.Request(f"{url}/v1/completions", method="POST", headers={
        "Content-Type": "application/json"}, data=json.dumps({"model": model, "prompt": prompt, "temperature": 0,
                                                              "max_tokens": SMOKE_MAX_TOKENS}).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        return str(json.loads(response.read())["choices"][0]["text"])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

