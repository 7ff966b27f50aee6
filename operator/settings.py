"""Operator settings, read once from the environment the Helm chart sets (LLMOPS_*)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class KubeRayMode(StrEnum):
    """Whether multi-worker Datasets run as KubeRay RayJobs."""

    AUTO = "auto"
    """When the cluster serves rayjobs.ray.io/v1 (looked up again every few minutes, so a later install counts)."""
    ON = "on"
    """Always; a cluster without KubeRay then fails the apply, loudly."""
    OFF = "off"
    """Never: multi-worker Datasets are rejected with a condition, and the operator does not watch RayJobs."""


class TrafficRouter(StrEnum):
    """How a Deployment's traffic is split between its revisions."""

    AUTO = "auto"
    """InferencePool when the cluster serves inference.networking.k8s.io/v1, else HTTPRoute when it serves
    Gateway API, else replicas (looked up again every few minutes)."""
    HTTPROUTE = "httpRoute"
    """One HTTPRoute with weighted backendRefs to each revision's Service."""
    INFERENCE_POOL = "inferencePool"
    """One InferencePool (and endpoint picker) per revision, weighted in one HTTPRoute."""
    REPLICAS = "replicas"
    """No router: one Service over every revision's pods, split by ready pod count (approximate)."""


class ParentRefSetting(BaseModel):
    """A Gateway routes attach to by default (chart value gateway.parentRefs)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str
    namespace: str | None = None
    section_name: str | None = Field(default=None, alias="sectionName")


class OperatorSettings(BaseModel):
    """Everything the operator process is configured with. Defaults suit a developer's laptop."""

    model_config = ConfigDict(frozen=True)

    log_level: LogLevel = LogLevel.INFO
    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to serve; empty serves all (cluster-wide)."""

    trainer_image: str = "ghcr.io/llmops-dev/trainer:0.1.0"
    trainer_cuda_image: str = "ghcr.io/llmops-dev/trainer:0.1.0-cuda"
    server_image: str = "ghcr.io/llmops-dev/server:0.1.0"
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    """Image of the `vllm` server runtime."""

    epp_image: str = "registry.k8s.io/gateway-api-inference-extension/epp:v1.0.0"
    """Endpoint picker run beside each revision's InferencePool."""
    artifact_root: str = "pvc://llmops-artifacts"

    health_port: int = Field(default=8080, ge=0, le=65535)
    """Kopf's liveness endpoint (/healthz); 0 disables it."""

    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Prometheus endpoint (/metrics); 0 disables it."""

    progress_interval_seconds: float = Field(default=15, ge=0, le=3600)
    """How often the log tail of a running workload's rank-0 pod is read for live progress; 0 turns it off."""

    kuberay: KubeRayMode = KubeRayMode.AUTO
    """KubeRay for multi-worker Datasets (the chart sets off unless integrations.kuberay.enabled, which grants the
    RayJob permissions). The reconcile sees it resolved: on or off."""

    traffic_router: TrafficRouter = TrafficRouter.AUTO
    """How Deployments split traffic between revisions; the reconcile sees it resolved (never auto)."""

    gateway_parent_refs: tuple[ParentRefSetting, ...] = ()
    """Gateways an HTTPRoute attaches to when a Deployment names none (LLMOPS_GATEWAY_PARENT_REFS: JSON list)."""

    prometheus_url: str | None = None
    """Prometheus HTTP API the canary analysis queries; unset: the operator scrapes the server pods itself."""

    leader_election: bool = True
    lease_name: str = "llmops-operator"
    lease_namespace: str = "default"
    lease_duration_seconds: int = Field(default=15, ge=5, le=300)
    pod_name: str = Field(default_factory=socket.gethostname)
    """Identity written into the Lease."""

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(ns.strip() for ns in value.split(",") if ns.strip())
        return value

    @field_validator("gateway_parent_refs", mode="before")
    @classmethod
    def _parse_refs(cls, value: object) -> object:
        if isinstance(value, str):
            import json

            return json.loads(value) if value.strip() else ()
        return value

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorSettings:
        """Read LLMOPS_<FIELD> variables (e.g. LLMOPS_WATCH_NAMESPACES=a,b); unknown ones are ignored."""
        values = {name: environ[f"LLMOPS_{name.upper()}"] for name in cls.model_fields
                  if f"LLMOPS_{name.upper()}" in environ}
        return cls.model_validate(values)
