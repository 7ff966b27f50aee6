"""A launch plan as a KubeRay RayJob (ray.io/v1), and a RayJob's status read back into a state.

KubeRay starts a Ray cluster (one head pod, a worker group), submits the entrypoint to it from a submitter pod
(`ray job submit`; the entrypoint runs as the Ray driver on the head with RAY_ADDRESS set, so the Ray engine joins
the cluster), and tears the cluster down after the run. The role's replicas count every Ray node that does work,
the head included (the head also runs tasks), so a RayJob has `replicas - 1` worker pods: `workers: 3` is three
pods, as `workers: 1` is one pod running Ray locally.
"""

from __future__ import annotations

import shlex
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import Phase

from .jobs import (
    CONFIG_DIR,
    CONTAINER,
    JobState,
    KubernetesOptions,
    add_scratch,
    container_resources,
    pod_placement,
    stuck_pod,
)
from .storage import pvc_volumes
from .times import parse_time

API_VERSION = "ray.io/v1"
KIND = "RayJob"
WORKER_GROUP = "workers"
LABEL_RAY_JOB = "llmops.dev/ray-job"
"""On every pod of the RayJob's cluster, so its pods are found (stuck pods surface as conditions)."""
CLUSTER_TTL_SECONDS = 60
"""How long the finished Ray cluster stays for a look at its logs before KubeRay deletes it."""
SUBMITTER_REQUESTS = {"cpu": "200m", "memory": "256Mi"}
"""The submitter only runs `ray job submit` and follows the logs; requests keep it admissible under a CPU quota."""
# KubeRay reasons that are one CamelCase word are passed on as the condition's reason.
_KNOWN_REASONS = ("DeadlineExceeded", "SubmissionFailed", "AppFailed", "ValidationFailed",
                  "JobDeploymentStatusTransitionGracePeriodExceeded")


def _pod_template(options: KubernetesOptions, labels: dict[str, str], image: str, *, driver: bool) -> dict[str, Any]:
    """A Ray node's pod. Only the head, where the driver runs and reads sources and writes the output, gets the
    config, the claims, the credentials and the scratch volume: a ReadWriteOnce claim could not be mounted on
    several nodes, and the workers only run map tasks on data the driver hands them."""
    container: dict[str, Any] = {"name": CONTAINER, "image": image, "imagePullPolicy": options.image.pull_policy.value,
                                 "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]}
    volumes: list[dict[str, Any]] = [{"name": "shm", "emptyDir": {"medium": "Memory"}}]  # Ray's object store
    if resources := container_resources(options):
        container["resources"] = resources
    if driver:
        claims, mounts = pvc_volumes(list(options.pvc_uris))
        container["volumeMounts"] += [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *mounts]
        volumes += [{"name": "config", "configMap": {"name": options.config_map}}, *claims]
        if options.credentials_secret:
            container["envFrom"] = [{"secretRef": {"name": options.credentials_secret}}]
        add_scratch(container, volumes, options.scratch)
    return {"metadata": {"labels": dict(labels)},
            "spec": {"containers": [container], "volumes": volumes, **pod_placement(options)}}


def _submitter_template(options: KubernetesOptions, labels: dict[str, str], image: str) -> dict[str, Any]:
    """The submitter pod, labelled like ours: KubeRay fills in its `ray job submit` command (none given), and that
    command follows the driver's output, so this pod's log carries the pipeline's progress lines (live progress
    reads it as the rank-0 pod of the RayJob's submitter Job, which has the RayJob's name)."""
    container = {"name": CONTAINER, "image": image, "imagePullPolicy": options.image.pull_policy.value,
                 "resources": {"requests": dict(SUBMITTER_REQUESTS)}}
    return {"metadata": {"labels": dict(labels)},
            "spec": {"restartPolicy": "Never", "containers": [container], **pod_placement(options)}}


def ray_job_from_plan(plan: specs.AppDef, metadata: dict[str, Any], options: KubernetesOptions) -> dict[str, Any]:
    """The RayJob that runs a single-role launch plan on `role.num_replicas` Ray nodes (head included)."""
    (role,) = plan.roles
    if role.num_replicas < 2:
        raise ValueError("a RayJob is for two or more Ray nodes; one runs as a Job with Ray in local mode")
    labels = {**options.labels, LABEL_RAY_JOB: metadata["name"]}
    workers = role.num_replicas - 1
    spec: dict[str, Any] = {
        "entrypoint": shlex.join([role.entrypoint, *role.args]),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": CLUSTER_TTL_SECONDS,
        "backoffLimit": options.backoff_limit,
        "submitterPodTemplate": _submitter_template(options, labels, role.image),
        "rayClusterSpec": {
            # The submitter reaches the head's dashboard (job API) through the head Service.
            "headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0"},
                              "template": _pod_template(options, labels, role.image, driver=True)},
            "workerGroupSpecs": [{
                "groupName": WORKER_GROUP, "replicas": workers, "minReplicas": workers, "maxReplicas": workers,
                "rayStartParams": {}, "template": _pod_template(options, labels, role.image, driver=False)}],
        },
    }
    if options.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = options.active_deadline_seconds
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def ray_job_pods(children: dict[str, list[dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [p for p in children.get("Pod", []) if p["metadata"].get("labels", {}).get(LABEL_RAY_JOB) == name]


def ray_job_state(ray_job: dict[str, Any] | None, name: str, pods: list[dict[str, Any]] | None = None) -> JobState:
    """Pure reading of a RayJob (None: not created yet): `status.jobDeploymentStatus` says where KubeRay is
    (Initializing, Running, Complete, Failed, Suspended, Retrying, ...), `status.jobStatus` what Ray says of the job
    (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    if ray_job is None:
        return JobState(Phase.PENDING, "Creating", f"creating RayJob {name}")
    status = ray_job.get("status") or {}
    deployment, job = status.get("jobDeploymentStatus", ""), status.get("jobStatus", "")
    start, end, failed = parse_time(status.get("startTime")), parse_time(status.get("endTime")), status.get("failed", 0)
    said = (status.get("message") or "").strip()
    # Complete means "Ray's job reached an end", not success: only SUCCEEDED lets dependents start on the output.
    if deployment == "Complete" and job == "SUCCEEDED":
        return JobState(Phase.SUCCEEDED, "Completed", f"RayJob {name} completed", start, end, failed)
    if deployment in ("Failed", "ValidationFailed", "Complete"):
        given = status.get("reason") or ""
        reason = given if given in _KNOWN_REASONS else "RayJobFailed"
        message = f"RayJob {name} failed" + (f" (Ray job {job})" if job else "") + (f": {said}" if said else "")
        return JobState(Phase.FAILED, reason, message, start, end, failed)
    if deployment in ("Suspended", "Suspending"):
        return JobState(Phase.PENDING, "Queued", f"RayJob {name} waits for admission by its queue", start, None,
                        failed)
    if deployment == "Running" and job == "RUNNING":
        return JobState(Phase.RUNNING, "Running", f"RayJob {name} is running", start, None, failed)
    if deployment == "Retrying":
        return JobState(Phase.PENDING, "Retrying", f"RayJob {name} starts again after a failure"
                        + (f": {said}" if said else ""), start, None, failed)
    if stuck := stuck_pod(pods or []):
        return JobState(Phase.PENDING, stuck[0], stuck[1], start, None, failed)
    where = "submitting its job" if deployment == "Running" else "starting its Ray cluster"
    return JobState(Phase.PENDING, "RayClusterStarting", f"RayJob {name} is {where}", start, None, failed)
