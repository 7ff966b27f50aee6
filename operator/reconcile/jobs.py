"""A workload's Kubernetes Job: built from a launch plan's torchx AppDef, and read back into a run state.

The launch plan is the backend-neutral description (ARCHITECTURE §8, `plan.py`): the Kubernetes backend
(`operator/backends/kubernetes.py`) builds its Job with these functions; local mode runs the same plan on this
machine. A role with several replicas becomes an
Indexed Job whose pods find each other through a headless Service (pod `<job>-0.<service>` hosts torchrun's
rendezvous); each pod learns its node rank from its completion index, as Kubeflow Trainer does it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import ComputeResources, ImageSpec, Phase, Placement
from llmops.trainer.config import exit_codes

from .plan import RunState, Scratch
from .quota import creation_failure
from .storage import pvc_volumes
from .times import parse_time

CONFIG_DIR = "/etc/llmops"
CONFIG_FILE = "config.json"
CONTAINER = "main"
RENDEZVOUS_PORT = 29500
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
SCRATCH_DIR = "/scratch"
"""Where a plan's Scratch volume is mounted; the container's TMPDIR points there."""


@dataclass(frozen=True)
class KubernetesOptions:
    """What a Job needs beyond the launch plan: placement, resources, retry policy, config volume."""

    config_map: str
    resources: ComputeResources
    placement: Placement
    image: ImageSpec
    backoff_limit: int
    active_deadline_seconds: int | None = None
    queue_name: str | None = None
    credentials_secret: str | None = None
    """Secret whose keys become environment variables (object-store credentials)."""
    pvc_uris: tuple[str, ...] = ()
    """pvc:// URIs the workload reads or writes; their claims are mounted (see storage.py)."""
    labels: dict[str, str] = field(default_factory=dict)
    scratch: Scratch | None = None
    """An emptyDir at SCRATCH_DIR as the driver container's TMPDIR."""


def add_scratch(container: dict[str, Any], volumes: list[dict[str, Any]], scratch: Scratch | None) -> None:
    """Mount the scratch emptyDir in `container` and point its TMPDIR there (tempfile and numpy spill to it)."""
    if scratch is None:
        return
    volumes.append({"name": "scratch", "emptyDir": {"sizeLimit": scratch.size_limit}
                    if scratch.size_limit is not None else {}})
    container["volumeMounts"] = [*container.get("volumeMounts", []), {"name": "scratch", "mountPath": SCRATCH_DIR}]
    container["env"] = [*container.get("env", []), {"name": "TMPDIR", "value": SCRATCH_DIR}]


def config_map(meta: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap a workload reads its config from (mounted at CONFIG_DIR/CONFIG_FILE)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True)}}


def pod_failure_policy() -> dict[str, Any]:
    """Retry preemptions and node disruptions for free; fail at once on errors a retry cannot fix."""
    return {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                              "values": list(exit_codes.DO_NOT_RETRY)}},
        {"action": "Ignore", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                             "values": list(exit_codes.RETRY_FREE)}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]}


def headless_service(metadata: dict[str, Any], selector: dict[str, str]) -> dict[str, Any]:
    """The Service that gives each pod of an Indexed Job a stable DNS name for rendezvous."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"clusterIP": "None", "selector": selector, "publishNotReadyAddresses": True,
                     "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}]}}


def torchrun_env(job_name: str, service: str, nodes: int, processes: int) -> dict[str, str]:
    """torchrun reads its arguments from PET_* variables; the node rank comes from the pod (downward API)."""
    master = "localhost" if nodes == 1 else f"{job_name}-0.{service}"
    return {"PET_NNODES": str(nodes), "PET_NPROC_PER_NODE": str(processes), "PET_MASTER_ADDR": master,
            "PET_MASTER_PORT": str(RENDEZVOUS_PORT)}


def pod_placement(options: KubernetesOptions) -> dict[str, Any]:
    """The pod spec fields that place a pod and let it pull its image (empty ones left out)."""
    placement, out = options.placement, dict[str, Any]()
    if placement.node_selector:
        out["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        out["tolerations"] = [t.to_wire() for t in placement.tolerations]
    if placement.priority_class_name:
        out["priorityClassName"] = placement.priority_class_name
    if options.image.pull_secrets:
        out["imagePullSecrets"] = [{"name": name} for name in options.image.pull_secrets]
    return out


def container_resources(options: KubernetesOptions, gpus: int = 0) -> dict[str, Any]:
    """requests/limits of the workload container, GPUs under the pool's resource name; empty parts left out."""
    resources: dict[str, Any] = {"requests": dict(options.resources.requests), "limits": dict(options.resources.limits)}
    if gpus:
        for kind in ("requests", "limits"):
            resources[kind][options.placement.gpu_resource_name] = gpus
    return {k: v for k, v in resources.items() if v}


def pod_template(role: specs.Role, options: KubernetesOptions, *, restart_policy: str,
                 volumes: tuple[dict[str, Any], ...] = (), mounts: tuple[dict[str, Any], ...] = ()
                 ) -> dict[str, Any]:
    """The pod template every workload child runs (a Job's pods, a model server's pods): one container named
    CONTAINER running the role, its config mounted at CONFIG_DIR, pvc:// claims mounted, credentials as
    environment, placement and GPUs from the options. `volumes`/`mounts` add what only one kind of child needs."""
    pvc_volumes_, pvc_mounts = pvc_volumes(list(options.pvc_uris))
    resources = container_resources(options, role.resource.gpu)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": role.image,
        "imagePullPolicy": options.image.pull_policy.value,
        "command": [role.entrypoint],
        "args": list(role.args),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, *pvc_mounts, *mounts],
        # The workload writes its failure cause here; the operator surfaces it in a condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    # Empty fields are left out: the API server drops them, and applied objects are compared with stored ones.
    env = [{"name": k, "value": v} for k, v in sorted(role.env.items())]
    if "PET_NNODES" in role.env:
        env.append({"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}})
    if env:
        container["env"] = env
    if resources:
        container["resources"] = resources
    if options.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": options.credentials_secret}}]
    if role.port_map:
        container["ports"] = [{"name": name, "containerPort": port} for name, port in sorted(role.port_map.items())]
    pod_volumes = [{"name": "config", "configMap": {"name": options.config_map}}, *pvc_volumes_, *volumes]
    add_scratch(container, pod_volumes, options.scratch)
    pod_spec: dict[str, Any] = {"restartPolicy": restart_policy, "containers": [container], "volumes": pod_volumes}
    pod_spec.update(pod_placement(options))
    return {"metadata": {"labels": dict(options.labels)}, "spec": pod_spec}


def job_from_plan(plan: specs.AppDef, metadata: dict[str, Any], options: KubernetesOptions,
                  service: str | None = None) -> dict[str, Any]:
    """The Job that runs a single-role launch plan; several replicas make it Indexed, behind `service`."""
    (role,) = plan.roles
    if role.num_replicas > 1 and service is None:
        raise ValueError("a multi-replica launch plan needs a headless service for rendezvous")
    distributed = "PET_NNODES" in role.env
    # torch workers share tensors through /dev/shm: give it room.
    template = pod_template(role, options, restart_policy="Never",
                            volumes=({"name": "shm", "emptyDir": {"medium": "Memory"}},) if distributed else (),
                            mounts=({"name": "shm", "mountPath": "/dev/shm"},) if distributed else ())
    if service:
        template["spec"]["subdomain"] = service
    spec: dict[str, Any] = {
        "backoffLimit": options.backoff_limit,
        "completions": role.num_replicas,
        "parallelism": role.num_replicas,
        "completionMode": "Indexed",
        "podFailurePolicy": pod_failure_policy(),
        "template": template,
    }
    if options.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = options.active_deadline_seconds
    if options.queue_name:
        # Kueue admits the Job as a whole and unsuspends it.
        metadata = {**metadata, "labels": {**metadata["labels"], "kueue.x-k8s.io/queue-name": options.queue_name}}
        spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


JobState = RunState
"""A Job's status, read: the backend-neutral run state."""


def job_and_pods(children: dict[str, list[dict[str, Any]]], job_name: str) -> tuple[dict[str, Any] | None,
                                                                                   list[dict[str, Any]]]:
    """The observed Job of this name (None if absent) and its pods."""
    job = next((j for j in children.get("Job", []) if j["metadata"]["name"] == job_name), None)
    pods = [p for p in children.get("Pod", []) if p["metadata"].get("labels", {}).get("job-name") == job_name]
    return job, pods


def job_events(children: dict[str, list[dict[str, Any]]], job_name: str) -> list[dict[str, Any]]:
    """The observed Events about the Job of this name (the Kopf layer reads them only for a stuck Job)."""
    return [e for e in children.get("Event", []) if e.get("involvedObject", {}).get("kind") == "Job"
            and e["involvedObject"].get("name") == job_name]


# Container waiting reasons that mean "this will not start by itself".
STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError")


def stuck_pod(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) of a pod that cannot be scheduled or whose container cannot start."""
    for pod in pods:
        name = pod["metadata"]["name"]
        for condition in pod.get("status", {}).get("conditions", []):
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return "Unschedulable", f"pod {name} cannot be scheduled: {condition.get('message', '')}".strip()
        for container in pod.get("status", {}).get("containerStatuses", []):
            waiting = container.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return waiting["reason"], f"pod {name}: {waiting['reason']}: {waiting.get('message', '')}".strip()
    return None


def terminated_cause(pods: list[dict[str, Any]], state: str = "state") -> tuple[int, str] | None:
    """(exit code, what the workload said) of the newest failed container: in its current `state`, or in its
    `lastState` (a restarted container, e.g. a server that keeps failing to load its model)."""
    found = None
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses", []):
            terminated = (container.get(state) or {}).get("terminated") or {}
            if terminated.get("exitCode"):
                said = (terminated.get("message") or terminated.get("reason") or "").strip()
                found = (int(terminated["exitCode"]), said)
    return found


def job_state(job: dict[str, Any] | None, name: str, pods: list[dict[str, Any]] | None = None,
              events: list[dict[str, Any]] | None = None) -> JobState:
    """Pure reading of a Job (None: not created yet), its pods and Events: phase, reason and a message for people."""
    pods = pods or []
    if job is None:
        return JobState(Phase.PENDING, "Creating", f"creating Job {name}")
    status = job.get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
    start, failed = parse_time(status.get("startTime")), status.get("failed", 0)
    # Kubernetes >= 1.31 says the outcome first (SuccessCriteriaMet, FailureTarget) and adds Complete or Failed
    # once the pods are gone: the outcome is known from the first, so the phase never steps back to Pending.
    if done := conditions.get("Complete") or conditions.get("SuccessCriteriaMet"):
        end = parse_time(status.get("completionTime")) or parse_time(done.get("lastTransitionTime"))
        return JobState(Phase.SUCCEEDED, "Completed", f"Job {name} completed", start, end, failed)
    if condition := conditions.get("Failed") or conditions.get("FailureTarget"):
        reason = condition.get("reason") or "JobFailed"
        message = condition.get("message") or f"Job {name} failed"
        if cause := terminated_cause(pods):
            code, said = cause
            reason = exit_codes.REASONS.get(code, reason)
            message = f"{message}; the workload exited with code {code}" + (f": {said}" if said else "")
        return JobState(Phase.FAILED, reason, message, start, parse_time(condition.get("lastTransitionTime")), failed)
    if "Suspended" in conditions or job.get("spec", {}).get("suspend"):
        return JobState(Phase.PENDING, "Queued", f"Job {name} waits for admission by its queue", start, None, failed)
    # `active` counts pending pods too; only a ready pod is really running.
    if status.get("ready", 0) > 0:
        return JobState(Phase.RUNNING, "Running", f"Job {name} is running", start, None, failed)
    if stuck := stuck_pod(pods):
        return JobState(Phase.PENDING, stuck[0], stuck[1], start, None, failed)
    # No pod at all: the pods may have been refused (quota, admission). Once pods exist, the Events no longer
    # matter, so the condition clears by itself when the quota is raised.
    if not pods and (refused := creation_failure(events or [], job)):
        return JobState(Phase.PENDING, refused[0], refused[1], start, None, failed, stalled=True)
    return JobState(Phase.PENDING, "PodsPending", f"Job {name} is waiting for its pod to start", start, None, failed)
