"""The Kubernetes backend: a launch plan becomes children (ConfigMap + Job, + headless Service for several
nodes, or a KubeRay RayJob), and the children observed become the run's state and result.

`reconcile(kind, ...)` is what the Kopf layer registers per kind: the kind's pure, backend-neutral decision
(`workload.decide`) with this backend's children and observation. Everything here is pure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import Resource
from llmops.operator.reconcile.jobs import (
    CONFIG_DIR,
    CONFIG_FILE,
    KubernetesOptions,
    config_map,
    headless_service,
    job_and_pods,
    job_events,
    job_from_plan,
    job_state,
    torchrun_env,
)
from llmops.operator.reconcile.objects import labels, metadata
from llmops.operator.reconcile.plan import CONFIG_ARG, Launcher, LaunchPlan, RunObservation
from llmops.operator.reconcile.rayjob import KIND as RAY_JOB
from llmops.operator.reconcile.rayjob import ray_job_from_plan, ray_job_pods, ray_job_state
from llmops.operator.reconcile.storage import local_path
from llmops.operator.reconcile.workload import Decision, Rejected, WorkloadKind, decide
from llmops.operator.settings import KubeRayMode, OperatorSettings
from llmops.trainer.config.result import WorkloadResult

CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
NOT_REWRITTEN = frozenset({"lineage"})
"""Config keys whose URIs record where things are, not where the pod opens them."""


def in_pod(document: Any) -> Any:
    """The config document as a pod sees it: every pvc:// URI becomes the path its claim is mounted at."""
    if isinstance(document, dict):
        return {k: v if k in NOT_REWRITTEN else in_pod(v) for k, v in document.items()}
    if isinstance(document, list):
        return [in_pod(v) for v in document]
    return local_path(document) if isinstance(document, str) else document


def _role(plan: LaunchPlan, job_name: str, service: str | None) -> specs.Role:
    """The pod's role: the plan's, with the config at its mount path, under torchrun with its PET_* env."""
    role = plan.role
    args = [CONFIG_PATH if a == CONFIG_ARG else a for a in role.args]
    entrypoint, env = role.entrypoint, dict(role.env)
    if plan.launcher is Launcher.TORCHRUN:
        entrypoint, args = "torchrun", ["--no-python", role.entrypoint, *args]
        env.update(torchrun_env(job_name, service or "", plan.compute.nodes, plan.compute.processes_per_node))
    return specs.Role(name=role.name, image=role.image, entrypoint=entrypoint, args=args, env=env,
                      num_replicas=role.num_replicas, resource=role.resource, port_map=dict(role.port_map))


def desired_children(resource: Resource, plan: LaunchPlan, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The objects that run `plan` for `resource`; the run (Job or RayJob) last."""
    if plan.launcher is Launcher.RAY and settings.kuberay is not KubeRayMode.ON:
        raise Rejected("KubeRayUnavailable", f"spec.execution.workers is {plan.role.num_replicas}, and more than "
                       "one worker runs on a Ray cluster, which needs KubeRay (the rayjobs.ray.io/v1 API) and the "
                       "chart's integrations.kuberay.enabled=true: install KubeRay, or set workers to 1")
    meta = metadata(resource, plan.run.removeprefix(f"{resource.metadata.name}-"))
    out = [config_map(meta, in_pod(plan.config))]
    service = None
    if plan.launcher is Launcher.TORCHRUN and plan.compute.nodes > 1:
        service = meta["name"]
        out.append(headless_service(meta, {**labels(resource), "job-name": meta["name"]}))
    compute = plan.compute
    options = KubernetesOptions(
        config_map=meta["name"], resources=compute.resources, placement=compute.placement, image=compute.image,
        backoff_limit=compute.backoff_limit, active_deadline_seconds=compute.active_deadline_seconds,
        queue_name=compute.queue_name, credentials_secret=compute.credentials_secret, pvc_uris=plan.uris,
        labels=labels(resource), scratch=compute.scratch)
    app = specs.AppDef(name=plan.app.name, roles=[_role(plan, meta["name"], service)])
    if plan.launcher is Launcher.RAY:
        return [*out, ray_job_from_plan(app, meta, options)]
    job = job_from_plan(app, meta, options, service)
    if compute.secret_env:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        container["env"] = [*container.get("env", []), *({"name": e.name, "valueFrom": {"secretKeyRef": {
            "name": e.secret, "key": e.key}}} for e in compute.secret_env)]
    return [*out, job]


def result_from_pods(pods: list[dict[str, Any]]) -> WorkloadResult | None:
    """The result a workload left in a terminated container's message, if any."""
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses", []):
            message = (container.get("state", {}).get("terminated") or {}).get("message")
            if result := WorkloadResult.from_message(message):
                return result
    return None


def observe(desired: list[dict[str, Any]], children: dict[str, list[dict[str, Any]]]) -> RunObservation:
    """How the run (the last of `desired`) stands, from the children observed now. The run is applied before
    the status is written, so one the index does not show yet counts as created (PodsPending or Queued)."""
    run = desired[-1]
    name = run["metadata"]["name"]
    if run["kind"] == RAY_JOB:
        ray_job = next((r for r in children.get(RAY_JOB, []) if r["metadata"]["name"] == name), None)
        return RunObservation(ray_job_state(ray_job, name, ray_job_pods(children, name)))
    job, pods = job_and_pods(children, name)
    state = job_state(job if job is not None else run, name, pods, job_events(children, name))
    return RunObservation(state, result_from_pods(pods))


def reconcile(kind: WorkloadKind, resource: Resource, children: dict[str, list[dict[str, Any]]],
              refs: dict[tuple[str, str], Any], settings: OperatorSettings, now: datetime) -> Decision:
    """Pure: the children this resource needs now and its next status, given the children it owns."""
    desired: list[dict[str, Any]] = []

    def observed(plan: LaunchPlan) -> RunObservation:
        desired.extend(desired_children(resource, plan, settings))
        return observe(desired, children)

    _, status, events = decide(kind, resource, observed, refs, settings, now)
    return Decision(children=desired, status=status, events=events)


def reconciler(kind: WorkloadKind) -> Callable[..., Decision]:
    """`reconcile` for one kind, as the Kopf layer calls it: (resource, children, refs, settings, now)."""
    return functools.partial(reconcile, kind)
