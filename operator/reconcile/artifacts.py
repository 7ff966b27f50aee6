"""Deleting a resource's artifacts with it (`spec.output.retainArtifacts: false`).

A resource that asks for it carries the finalizer FINALIZER. When it is deleted, the API server keeps it
while the finalizer is there; the operator stops its workload, runs one cleanup Job (the `llmops-artifacts`
workload, with the resource's own credentials Secret and volumes, since the operator holds neither), and
removes the finalizer once that Job succeeded. A failed cleanup keeps the resource, with a condition saying
why and how to give up. Everything here is pure: the resource and its Jobs in, children and a verdict out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import ComputeResources, Placement, Resource
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.artifacts import ArtifactCleanupConfig, is_root

from .conditions import set_condition
from .defaults import output_root, workload_image
from .jobs import CONFIG_DIR, CONFIG_FILE, KubernetesOptions, config_map, job_from_plan, job_state
from .objects import labels, metadata
from .storage import local_path
from .workload import Decision

FINALIZER = "llmops.dev/delete-artifacts"
SUFFIX = "cleanup"
ENTRYPOINT = "llmops-artifacts"
CLEANUP_BACKOFF_LIMIT = 3


def wants_cleanup(resource: Resource) -> bool:
    output = getattr(resource.spec, "output", None)
    return output is not None and not output.retain_artifacts


def finalizers(resource: Resource, current: list[str], deleting: bool) -> list[str] | None:
    """The finalizer list a resource should have, or None when it has it already. Added only while the
    resource lives (a deleting one is cleaned up, then released by the caller); dropped when the spec changes
    back to retaining its artifacts."""
    if deleting:
        return None
    want = wants_cleanup(resource)
    if want and FINALIZER not in current:
        return [*current, FINALIZER]
    if not want and FINALIZER in current:
        return [f for f in current if f != FINALIZER]
    return None


def artifact_uri(resource: Resource, settings: OperatorSettings) -> str:
    """What to delete: the resource's whole output root (`spec.output.uri`, else the default under the artifact
    root), so its model or results go with its checkpoints and everything else it wrote there."""
    return output_root(resource, settings)


@dataclass(frozen=True)
class Cleanup:
    """What deleting needs now: the children to keep (only the cleanup Job and its config), whether the
    finalizer may go, and a reason/message for the status while it may not."""

    children: list[dict[str, Any]]
    done: bool
    reason: str
    message: str


def cleanup(resource: Resource, jobs: list[dict[str, Any]], pods: list[dict[str, Any]],
            settings: OperatorSettings) -> Cleanup:
    uri = artifact_uri(resource, settings)
    if is_root(local_path(uri)) or is_root(uri):
        return Cleanup([], False, "CleanupRefused",
                       f"refusing to delete {uri}: it is a filesystem root or a bucket; remove the finalizer "
                       f"{FINALIZER} to delete the resource and keep its artifacts")
    meta = metadata(resource, SUFFIX)
    # The workload must be gone first, or a pod stopping with a last checkpoint would write after the delete.
    if any(j["metadata"]["name"] != meta["name"] for j in jobs) or any(
            p["metadata"].get("labels", {}).get("job-name") != meta["name"] for p in pods):
        return Cleanup([], False, "StoppingWorkload", f"stopping the workload before deleting {uri}")
    config = config_map(meta, ArtifactCleanupConfig(uris=[local_path(uri)]).to_wire())
    spec = resource.spec  # type: ignore[attr-defined]
    role = specs.Role(name=SUFFIX, image=workload_image(spec.image, settings), entrypoint=ENTRYPOINT,
                      args=["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
                      resource=specs.Resource(cpu=-1, gpu=0, memMB=-1))
    options = KubernetesOptions(
        # Default placement: a cleanup needs no GPU pool, and the scheduler follows a zonal volume by itself.
        config_map=meta["name"], resources=ComputeResources(), placement=Placement(),
        image=spec.image, backoff_limit=CLEANUP_BACKOFF_LIMIT, credentials_secret=spec.output.credentials_secret,
        pvc_uris=(uri,), labels=labels(resource))
    job = job_from_plan(specs.AppDef(name=resource.metadata.name, roles=[role]), meta, options)
    observed = next((j for j in jobs if j["metadata"]["name"] == meta["name"]), None)
    state = job_state(observed, meta["name"], [p for p in pods if p["metadata"].get("labels", {}).get("job-name")
                                               == meta["name"]])
    if state.phase == "Succeeded":
        return Cleanup([config, job], True, "ArtifactsDeleted", f"deleted {uri}")
    if state.phase == "Failed":
        return Cleanup([config, job], False, "CleanupFailed",
                       f"deleting {uri} failed: {state.message}; fix the cause and delete Job {meta['name']} to "
                       f"retry, or remove the finalizer {FINALIZER} to keep the artifacts")
    return Cleanup([config, job], False, "DeletingArtifacts", f"deleting {uri} (Job {meta['name']})")


def deletion(resource: Resource, body_status: dict[str, Any], children: dict[str, list[dict[str, Any]]],
             settings: OperatorSettings, now: datetime) -> tuple[Decision, bool]:
    """The reconcile of a resource being deleted that holds FINALIZER: the children to keep, the status with
    an ArtifactsDeleted condition, and whether the finalizer may be removed now."""
    step = cleanup(resource, children.get("Job", []), children.get("Pod", []), settings)
    status = type(resource).field_model("status").model_validate(body_status)
    set_condition(status.conditions, "ArtifactsDeleted", step.done, step.reason, step.message, now,
                  resource.metadata.generation)
    return Decision(children=step.children, status=status.to_wire(), events=[]), step.done
