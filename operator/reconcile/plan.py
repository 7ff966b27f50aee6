"""The launch plan: one run of a workload, described without saying where it runs (ARCHITECTURE §8).

A kind's `plan()` returns a LaunchPlan (or says what it waits for); a backend runs it: the Kubernetes backend
(`operator/backends/kubernetes.py`) turns it into a ConfigMap and a Job (or a RayJob), the local backend
(`operator/backends/local.py`) into processes on this machine. Both read the run back into a RunObservation,
from which the kind's status follows by the same pure code. Kinds never import a backend.

The plan carries abstract URIs (`pvc://claim/x`, `s3://b/x`, `/abs/x`, `builtin://x`) in its config document;
turning them into what a process can open is the backend's business (a pvc:// becomes a mount path in a pod).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.common import ComputeResources, ImageSpec, Phase, Placement, RunInput
from llmops.trainer.config.layout import RUN_ENV
from llmops.trainer.config.result import WorkloadResult

CONFIG_ARG = "{config}"
"""Stands in a role's args for the path of the config document; each backend puts it somewhere and substitutes."""


class Launcher(StrEnum):
    PROCESS = "process"
    """The role's entrypoint, once."""
    TORCHRUN = "torchrun"
    """`torchrun --no-python ENTRYPOINT ...` on each of `nodes` nodes, `processes_per_node` workers each."""
    RAY = "ray"
    """The entrypoint as the driver of a Ray cluster of the role's replicas (KubeRay in a cluster)."""


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable whose value comes from a Secret's key (the value never enters a plan)."""

    name: str
    secret: str
    key: str


@dataclass(frozen=True)
class Scratch:
    """Room on the node for the workload's scratch files: an emptyDir as TMPDIR in a pod; locally, TMPDIR as is."""

    size_limit: int | str | None = None
    """The volume's sizeLimit (a Kubernetes quantity); None: bounded only by the node's ephemeral storage."""


@dataclass(frozen=True)
class Compute:
    """What the run needs from where it runs."""

    image: ImageSpec
    resources: ComputeResources = field(default_factory=ComputeResources)
    placement: Placement = field(default_factory=Placement)
    nodes: int = 1
    processes_per_node: int = 1
    gpus_per_node: int = 0
    backoff_limit: int = 0
    """Failed attempts retried (a preemption, exit 75, is retried without counting)."""
    active_deadline_seconds: int | None = None
    queue_name: str | None = None
    credentials_secret: str | None = None
    """Secret whose keys become environment variables (object-store credentials)."""
    secret_env: tuple[SecretEnv, ...] = ()
    scratch: Scratch | None = None
    """Scratch room the driver process writes to (the data workload's streaming spill)."""


@dataclass(frozen=True)
class LaunchPlan:
    suffix: str
    """What the resource's runs are called after its name (`data`, `train`, `finetune`, `eval`)."""
    number: int
    """The run's number (see `workload.run_number`): a new one for a new spec generation or new inputs."""
    app: specs.AppDef
    """One role: entrypoint, args (CONFIG_ARG where the config's path goes), env, replicas."""
    launcher: Launcher
    config: dict[str, Any]
    """The workload's config document (wire form), with abstract URIs."""
    reads: dict[str, str]
    """Named URIs the run reads (`data`, `base`, `model`, ...)."""
    writes: str
    """The output root the run writes under."""
    artifact_uri: str
    """What the resource's status.artifactUri is once the run succeeded."""
    compute: Compute
    inputs: tuple[RunInput, ...] = ()
    """The artifacts of referenced resources this run consumes (recorded in status.inputs)."""

    @property
    def run(self) -> str:
        """The run's name, `<name>-<suffix>-<number>`: its Job's (and ConfigMap's, Service's) name in a cluster,
        its folder locally. Never the name of an earlier, different run."""
        return f"{self.app.name}-{self.suffix}-{self.number}"

    @property
    def role(self) -> specs.Role:
        """The app's one role, with the run's name in its environment (RUN_ENV): a workload resumes only from
        checkpoints its own run wrote, never from an earlier run's under the same output root."""
        (role,) = self.app.roles
        return dataclasses.replace(role, env={**role.env, RUN_ENV: self.run})

    @property
    def uris(self) -> tuple[str, ...]:
        """Every location the run touches, output first."""
        return (self.writes, *(uri for uri in self.reads.values() if uri))


@dataclass(frozen=True)
class Waiting:
    """No plan yet: a referenced resource is not ready (or failed, and this one cannot run)."""

    what: str
    """e.g. "Dataset shakespeare"."""
    message: str
    failed: bool = False


@dataclass(frozen=True)
class RunState:
    """Where a run stands, as any backend reads it."""

    phase: Phase
    reason: str
    message: str
    start_time: datetime | None = None
    completion_time: datetime | None = None
    failed_pods: int = 0
    """Failed attempts so far (pods in a cluster, processes locally)."""
    stalled: bool = False
    """Nothing moves until someone acts (e.g. raises a quota): Progressing is False."""


@dataclass(frozen=True)
class RunObservation:
    state: RunState
    result: WorkloadResult | None = None
    """What the workload reported on the result channel (a verdict, its metrics), if it did."""


def plan_app(name: str, role: str, image: str, entrypoint: str, *, replicas: int = 1, gpus: int = 0,
             env: dict[str, str] | None = None) -> specs.AppDef:
    """A one-role AppDef running `entrypoint --config CONFIG_ARG`; cpu and memory are carried by Compute
    (Kubernetes quantities), so -1 means "not set here"."""
    return specs.AppDef(name=name, roles=[specs.Role(
        name=role, image=image, entrypoint=entrypoint, args=["--config", CONFIG_ARG], env=dict(env or {}),
        num_replicas=replicas, resource=specs.Resource(cpu=-1, gpu=gpus, memMB=-1))])
