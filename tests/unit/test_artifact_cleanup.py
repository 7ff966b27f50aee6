"""Deleting a resource's artifacts with it (`output.retainArtifacts: false`): the finalizer and the cleanup Job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmops.operator.api.admission import parse
from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.api.v1alpha1.pretrainjob import TrainingStatus
from llmops.operator.reconcile.artifacts import FINALIZER, cleanup, finalizers
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config import layout
from llmops.trainer.config.artifacts import is_root
from llmops.trainer.config.result import CheckpointStatus
from tests.conftest import example, patched

SETTINGS = OperatorSettings(artifact_root="pvc://artifacts", trainer_image="trainer:1")
BIN = Path(sys.executable).parent


def pretrainjob(**output: Any) -> Any:
    return parse(patched(example("PretrainJob"), {"metadata": {"namespace": "team", "uid": "u1", "generation": 1},
                                                   "spec": {"output": output}}))


def test_the_finalizer_follows_the_spec() -> None:
    assert finalizers(pretrainjob(retainArtifacts=False), ["other"], deleting=False) == ["other", FINALIZER]
    assert finalizers(pretrainjob(retainArtifacts=False), [FINALIZER], deleting=False) is None
    assert finalizers(pretrainjob(retainArtifacts=True), [FINALIZER, "other"], deleting=False) == ["other"]
    assert finalizers(pretrainjob(), [], deleting=False) is None  # artifacts are kept by default
    assert finalizers(pretrainjob(retainArtifacts=False), [], deleting=True) is None  # never added while deleting


def test_cleanup_runs_one_job_with_the_resources_credentials_and_volume() -> None:
    resource = pretrainjob(retainArtifacts=False, credentialsSecret="store", uri="pvc://models/team/tiny")
    step = cleanup(resource, [], [], SETTINGS)
    config_map, job = step.children
    assert not step.done and step.reason == "DeletingArtifacts"
    assert json.loads(config_map["data"]["config.json"]) == {"uris": ["/mnt/pvc/models/team/tiny"]}
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["llmops-artifacts"] and container["args"] == ["--config", "/etc/llmops/config.json"]
    assert {"secretRef": {"name": "store"}} in container["envFrom"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == \
        ["models"]
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {}))


def test_the_whole_output_root_is_deleted_not_only_the_model(tmp_path: Path) -> None:
    """status.artifactUri is `<out>/model`: the checkpoints beside it (and all else under `<out>`) go too."""
    settings = OperatorSettings(artifact_root=str(tmp_path / "artifacts"), trainer_image="trainer:1")
    resource = pretrainjob(retainArtifacts=False)
    root = tmp_path / "artifacts" / "team" / "pretrainjobs" / resource.metadata.name
    resource.status = TrainingStatus(phase=Phase.SUCCEEDED, artifact_uri=layout.model_uri(str(root)),
                                     checkpoint=CheckpointStatus(step=10, uri=layout.checkpoints_uri(str(root))))
    for part in (layout.model_uri(str(root)), layout.join(layout.checkpoints_uri(str(root)), "step-00000010")):
        Path(part).mkdir(parents=True)
        (Path(part) / "weights").write_bytes(b"x")
    config_map, _ = cleanup(resource, [], [], settings).children
    config = tmp_path / "config.json"
    config.write_text(config_map["data"]["config.json"])  # what the cleanup pod reads
    result = subprocess.run([str(BIN / "llmops-artifacts"), "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(config.read_text()) == {"uris": [str(root)]} and not root.exists()
    assert (tmp_path / "artifacts" / "team" / "pretrainjobs").is_dir()  # only this resource's root


def test_the_finalizer_goes_only_after_the_job_succeeded() -> None:
    resource = pretrainjob(retainArtifacts=False)
    name = cleanup(resource, [], [], SETTINGS).children[1]["metadata"]["name"]
    done = {"metadata": {"name": name}, "spec": {}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    failed = {"metadata": {"name": name}, "spec": {},
              "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    assert cleanup(resource, [done], [], SETTINGS).done
    refused = cleanup(resource, [failed], [], SETTINGS)
    assert not refused.done and refused.reason == "CleanupFailed" and FINALIZER in refused.message


def test_the_workload_stops_before_anything_is_deleted() -> None:
    resource = pretrainjob(retainArtifacts=False)
    training = {"metadata": {"name": "tiny-pretrain-1"}, "spec": {}, "status": {"active": 1}}
    pod = {"metadata": {"name": "tiny-pretrain-1-0", "labels": {"job-name": "tiny-pretrain-1"}}}
    for jobs, pods in (([training], [pod]), ([], [pod])):
        step = cleanup(resource, jobs, pods, SETTINGS)
        assert step.children == [] and step.reason == "StoppingWorkload"  # the caller deletes the stale Job


@pytest.mark.parametrize(("uri", "root"), [("/", True), ("s3://bucket", True), ("s3://bucket/", True),
                                           ("s3://bucket/run", False), ("/mnt/pvc/claim", False), (".", True)])
def test_roots_and_buckets_are_never_deleted(uri: str, root: bool) -> None:
    assert is_root(uri) is root


def test_a_bucket_as_output_is_refused_with_a_way_out() -> None:
    step = cleanup(pretrainjob(retainArtifacts=False, uri="s3://bucket"), [], [], SETTINGS)
    assert step.children == [] and not step.done and step.reason == "CleanupRefused"


def test_the_cleanup_workload_deletes_and_tolerates_what_is_gone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "x.pt").write_bytes(b"x")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"uris": [str(run), str(tmp_path / "never-written")]}))
    result = subprocess.run([str(BIN / "llmops-artifacts"), "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not run.exists() and [json.loads(line)["event"] for line in result.stdout.splitlines()] == \
        ["deleted", "absent"]
    config.write_text(json.dumps({"uris": ["/"]}))
    refused = subprocess.run([str(BIN / "llmops-artifacts"), "--config", str(config)], capture_output=True, text=True)
    assert refused.returncode == 78 and "refusing to delete /" in refused.stderr
