"""Multi-worker Datasets as KubeRay RayJobs: the pure builder, the status mapping, and the rejection without KubeRay."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from llmops.operator.api.v1alpha1 import Dataset
from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.backends import kubernetes
from llmops.operator.backends.kubernetes import reconcile
from llmops.operator.reconcile import dataset
from llmops.operator.reconcile.jobs import CONFIG_DIR, SCRATCH_DIR
from llmops.operator.reconcile.rayjob import LABEL_RAY_JOB, ray_job_state
from llmops.operator.reconcile.workload import Rejected
from llmops.operator.settings import KubeRayMode, OperatorSettings
from tests.unit.test_reconcile import NOW, SETTINGS, make_dataset, pod

RAY = SETTINGS.model_copy(update={"kuberay": KubeRayMode.ON})
NAME = "shakespeare-data-1"
EXECUTION = {"workers": 3, "resources": {"requests": {"cpu": "4", "memory": "8Gi"}},
             "placement": {"nodeSelector": {"llmops.dev/pool": "cpu"},
                           "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}}


def children(resource: Dataset, settings: OperatorSettings = RAY) -> list[dict[str, Any]]:
    return kubernetes.desired_children(resource, dataset.plan(resource, {}, settings), settings)


def ray_children(**spec: Any) -> list[dict[str, Any]]:
    return children(make_dataset(execution=EXECUTION, **spec))


class TestBuilder:
    def test_a_config_map_and_a_ray_job_owned_and_labelled(self) -> None:
        config, ray_job = ray_children()
        assert (config["kind"], ray_job["kind"], ray_job["apiVersion"]) == ("ConfigMap", "RayJob", "ray.io/v1")
        assert ray_job["metadata"]["name"] == config["metadata"]["name"] == NAME
        owner = ray_job["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["controller"]) == ("Dataset", True)
        assert ray_job["metadata"]["labels"]["llmops.dev/kind"] == "Dataset"

    def test_the_entrypoint_is_the_data_workload_on_the_ray_engine(self) -> None:
        spec = ray_children()[1]["spec"]
        assert shlex.split(spec["entrypoint"]) == ["llmops-data", "--config", f"{CONFIG_DIR}/config.json",
                                                   "--engine", "ray"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        assert spec["backoffLimit"] == 2  # the Dataset's default backoffLimit

    def test_head_plus_workers_minus_one_with_the_same_image_resources_and_placement(self) -> None:
        cluster = ray_children()[1]["spec"]["rayClusterSpec"]
        (group,) = cluster["workerGroupSpecs"]
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2  # + the head = 3 workers
        for template in (cluster["headGroupSpec"]["template"], group["template"]):
            (container,) = template["spec"]["containers"]
            assert container["image"] == "trainer:1"
            assert container["resources"] == {"requests": {"cpu": "4", "memory": "8Gi"}}
            assert template["spec"]["nodeSelector"] == {"llmops.dev/pool": "cpu"}
            assert template["spec"]["tolerations"][0]["key"] == "dedicated"
            assert template["metadata"]["labels"][LABEL_RAY_JOB] == NAME  # its pods are found
            assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]

    def test_the_submitter_pod_is_ours_to_find_with_its_command_left_to_kuberay(self) -> None:
        submitter = ray_children()[1]["spec"]["submitterPodTemplate"]
        (container,) = submitter["spec"]["containers"]
        assert "command" not in container and container["name"] == "main" and container["image"] == "trainer:1"
        assert submitter["metadata"]["labels"][LABEL_RAY_JOB] == NAME
        assert submitter["metadata"]["labels"]["llmops.dev/name"] == "shakespeare"
        assert submitter["spec"]["restartPolicy"] == "Never"
        assert submitter["spec"]["nodeSelector"] == {"llmops.dev/pool": "cpu"}

    def test_only_the_head_where_the_driver_runs_gets_config_claims_and_credentials(self) -> None:
        cluster = ray_children(output={"uri": "pvc://scratch/out", "credentialsSecret": "s3"})[1]["spec"][
            "rayClusterSpec"]
        head = cluster["headGroupSpec"]["template"]["spec"]
        worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
        assert {"name": "config", "configMap": {"name": NAME}} in head["volumes"]
        assert {"name": "pvc-scratch", "persistentVolumeClaim": {"claimName": "scratch"}} in head["volumes"]
        assert head["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3"}}]
        assert [v["name"] for v in worker["volumes"]] == ["shm"] and "envFrom" not in worker["containers"][0]

    def test_streaming_scratch_is_on_the_head_where_the_driver_spills(self) -> None:
        execution = {**EXECUTION, "streaming": {"enabled": True}}
        cluster = children(make_dataset(execution=execution))[1]["spec"]["rayClusterSpec"]
        head = cluster["headGroupSpec"]["template"]["spec"]
        worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
        assert {"name": "scratch", "emptyDir": {}} in head["volumes"]
        assert {"name": "TMPDIR", "value": SCRATCH_DIR} in head["containers"][0]["env"]
        assert "scratch" not in [v["name"] for v in worker["volumes"]]

    def test_one_worker_stays_a_job_even_with_kuberay(self) -> None:
        assert [c["kind"] for c in children(make_dataset())] == ["ConfigMap", "Job"]

    @pytest.mark.parametrize("mode", [KubeRayMode.OFF, KubeRayMode.AUTO])  # auto unresolved counts as absent
    def test_without_kuberay_several_workers_are_rejected_with_the_way_out(self, mode: KubeRayMode) -> None:
        settings = SETTINGS.model_copy(update={"kuberay": mode})
        with pytest.raises(Rejected, match="install KubeRay, or set workers to 1") as error:
            reconcile(dataset, make_dataset(execution={"workers": 3}), {}, {}, settings, NOW)
        assert error.value.reason == "KubeRayUnavailable"


def ray_job(deployment: str = "", job: str = "", **status: Any) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": NAME},
            "status": {"jobDeploymentStatus": deployment, "jobStatus": job, **status}}


@pytest.mark.parametrize(("observed", "want_phase", "want_reason"), [
    (None, Phase.PENDING, "Creating"),
    (ray_job(), Phase.PENDING, "RayClusterStarting"),
    (ray_job("Initializing"), Phase.PENDING, "RayClusterStarting"),
    (ray_job("Running", "PENDING"), Phase.PENDING, "RayClusterStarting"),
    (ray_job("Running", "RUNNING"), Phase.RUNNING, "Running"),
    (ray_job("Complete", "SUCCEEDED"), Phase.SUCCEEDED, "Completed"),
    (ray_job("Complete", "FAILED"), Phase.FAILED, "RayJobFailed"),
    (ray_job("Complete", "STOPPED"), Phase.FAILED, "RayJobFailed"),
    (ray_job("Complete"), Phase.FAILED, "RayJobFailed"),  # an end without Ray's SUCCEEDED is no success
    (ray_job("Failed", "FAILED", reason="AppFailed"), Phase.FAILED, "AppFailed"),
    (ray_job("Failed", reason="DeadlineExceeded"), Phase.FAILED, "DeadlineExceeded"),
    (ray_job("Failed", reason="something odd happened"), Phase.FAILED, "RayJobFailed"),
    (ray_job("Suspended"), Phase.PENDING, "Queued"),
    (ray_job("Retrying", failed=1), Phase.PENDING, "Retrying"),
])
def test_ray_job_state(observed: dict[str, Any] | None, want_phase: Phase, want_reason: str) -> None:
    state = ray_job_state(observed, NAME)
    assert (state.phase, state.reason) == (want_phase, want_reason)


def test_a_failed_ray_job_says_why() -> None:
    state = ray_job_state(ray_job("Failed", "FAILED", reason="AppFailed", message="exit code 78: no source",
                                  failed=1), NAME)
    assert state.message == f"RayJob {NAME} failed (Ray job FAILED): exit code 78: no source"
    assert state.failed_pods == 1


def test_a_ray_pod_that_cannot_be_scheduled_is_named() -> None:
    stuck = pod("x", conditions=[{"type": "PodScheduled", "status": "False", "message": "0/4 nodes: Insufficient cpu"}])
    state = ray_job_state(ray_job("Initializing"), NAME, [stuck])
    assert state.reason == "Unschedulable" and "Insufficient cpu" in state.message


def test_the_dataset_status_follows_its_ray_job_to_success_with_the_artifact() -> None:
    resource = make_dataset(execution=EXECUTION)
    done = ray_job("Complete", "SUCCEEDED", startTime="2026-11-24T11:00:00Z", endTime="2026-11-24T11:30:00Z")
    decision = reconcile(dataset, resource, {"RayJob": [done]}, {}, RAY, NOW)
    status = decision.status
    assert status["phase"] == "Succeeded" and status["jobName"] == NAME
    assert status["artifactUri"] == "pvc://artifacts/team/datasets/shakespeare"
    assert status["completionTime"].startswith("2026-11-24T11:30:00")
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["status"] == "True"
