"""Revisions of a served model and the children that run one: ConfigMap, apps/v1 Deployment and Service.

A revision is one distinct (model artifact, server settings, image); its digest names it, its number orders
it. Resources, GPUs and placement are not part of it: changing them updates every live revision in place.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from torchx import specs

from llmops.operator.api.v1alpha1.deployment import Deployment, Runtime
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.serve import ServerConfig

from ..jobs import CONFIG_DIR, CONFIG_FILE, CONTAINER, KubernetesOptions, config_map, pod_template
from ..objects import labels, owner_reference
from ..storage import local_path, split_pvc

LABEL_REVISION = "llmops.dev/revision"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT = "model-server"
PORT_NAME = "http"
MODEL_CACHE = "/var/cache/llmops"
API_KEY_FILE = "/etc/llmops-api-key/key"
PROBE_PERIOD_SECONDS = 5


@dataclass(frozen=True)
class RevisionSpec:
    """What one revision runs."""

    revision: int
    digest: str
    model_uri: str
    image: str
    model_run: str | None = None


def server_image(deployment: Deployment, settings: OperatorSettings) -> str:
    spec = deployment.spec
    if spec.image.image:
        return spec.image.image
    return settings.vllm_image if spec.server.runtime is Runtime.VLLM else settings.server_image


def digest(model_uri: str, deployment: Deployment, image: str, model_run: str | None = None) -> str:
    """Identity of a revision: the artifact (and the run that made it), every server setting and the image
    (12 hex digits)."""
    document = {"model": model_uri, "run": model_run, "server": deployment.spec.server.to_wire(), "image": image}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:12]


def revision_name(deployment: Deployment, revision: int) -> str:
    return f"{deployment.metadata.name}-r{revision}"


def revision_labels(deployment: Deployment, revision: int) -> dict[str, str]:
    return {**labels(deployment), LABEL_COMPONENT: COMPONENT, LABEL_REVISION: str(revision)}


def selector(deployment: Deployment, revision: int | None = None) -> dict[str, str]:
    """Pods of one revision (or of every revision) of this Deployment."""
    out = {**labels(deployment), LABEL_COMPONENT: COMPONENT}
    return {**out, LABEL_REVISION: str(revision)} if revision is not None else out


def _meta(deployment: Deployment, name: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": deployment.metadata.namespace, "labels": {**labels(deployment), **(extra or {})},
            "ownerReferences": [owner_reference(deployment)]}


def server_config(deployment: Deployment) -> dict[str, Any]:
    """The part of spec.server that llmops-serve reads (the Kubernetes-only fields stay here)."""
    server = deployment.spec.server
    config = ServerConfig.model_validate(server.model_dump(include=set(ServerConfig.model_fields)))
    if config.served_model_name is None:
        config = config.model_copy(update={"served_model_name": deployment.metadata.name})
    return config.to_wire()


def _command(deployment: Deployment, model_uri: str) -> tuple[str, list[str]]:
    server = deployment.spec.server
    name = server.served_model_name or deployment.metadata.name
    model = local_path(model_uri)
    if server.runtime is Runtime.VLLM:
        args = ["--model", model, "--served-model-name", name, "--port", str(server.port),
                "--max-model-len", str(server.limits.max_prompt_tokens + server.limits.max_new_tokens),
                "--max-num-seqs", str(server.limits.max_batch_size), "--dtype", server.dtype.value,
                "--download-dir", MODEL_CACHE]
        if deployment.spec.gpus_per_replica > 1:
            args += ["--tensor-parallel-size", str(deployment.spec.gpus_per_replica)]
        if server.api_key_secret:
            args += ["--api-key", "$(LLMOPS_API_KEY)"]
        return "vllm", ["serve", *args]
    args = ["--model", model, "--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--cache-dir", MODEL_CACHE]
    if server.api_key_secret:
        args += ["--api-key-file", API_KEY_FILE]
    return "llmops-serve", args


def _probes(deployment: Deployment) -> dict[str, Any]:
    """A startup probe sized for slow model loads, then readiness and liveness on the server's own routes."""
    server = deployment.spec.server
    ready, live = ("/health", "/health") if server.runtime is Runtime.VLLM else ("/readyz", "/healthz")

    def probe(path: str, **extra: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": PORT_NAME}, "periodSeconds": PROBE_PERIOD_SECONDS, **extra}

    return {"startupProbe": probe(ready, failureThreshold=math.ceil(server.startup_seconds / PROBE_PERIOD_SECONDS)),
            "readinessProbe": probe(ready, failureThreshold=2),
            "livenessProbe": probe(live, failureThreshold=3, timeoutSeconds=5)}


def revision_children(deployment: Deployment, revision: RevisionSpec, replicas: int,
                      settings: OperatorSettings) -> list[dict[str, Any]]:
    """ConfigMap, apps/v1 Deployment of `replicas` server pods and a Service, all named `<name>-r<N>`."""
    spec, server = deployment.spec, deployment.spec.server
    name = revision_name(deployment, revision.revision)
    pod_labels = revision_labels(deployment, revision.revision)
    entrypoint, args = _command(deployment, revision.model_uri)
    env = {"LLMOPS_CACHE": MODEL_CACHE}
    role = specs.Role(name="server", image=revision.image, entrypoint=entrypoint, args=args, env=env,
                      port_map={PORT_NAME: server.port},
                      resource=specs.Resource(cpu=-1, gpu=spec.gpus_per_replica, memMB=-1))
    options = KubernetesOptions(
        config_map=name, resources=spec.resources, placement=spec.placement, image=spec.image, backoff_limit=0,
        pvc_uris=(revision.model_uri,) if split_pvc(revision.model_uri) else (), labels=pod_labels)
    # The model is fetched once per pod into this cache; a restarted container finds it there.
    volumes: list[dict[str, Any]] = [{"name": "model-cache", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "model-cache", "mountPath": MODEL_CACHE}]
    if server.api_key_secret:
        volumes.append({"name": "api-key", "secret": {"secretName": server.api_key_secret.name,
                                                      "items": [{"key": server.api_key_secret.key, "path": "key"}]}})
        mounts.append({"name": "api-key", "mountPath": API_KEY_FILE.rsplit("/", 1)[0], "readOnly": True})
    template = pod_template(role, options, restart_policy="Always", volumes=tuple(volumes), mounts=tuple(mounts))
    (container,) = template["spec"]["containers"]
    if container["name"] != CONTAINER:
        raise AssertionError("the server container must be the workload container")
    container.update(_probes(deployment))
    if server.runtime is Runtime.VLLM and server.api_key_secret:
        container.setdefault("env", []).append({"name": "LLMOPS_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": server.api_key_secret.name, "key": server.api_key_secret.key}}})
    # Room for the drain after SIGTERM: in-flight requests finish before the pod goes.
    template["spec"]["terminationGracePeriodSeconds"] = server.drain_seconds + 5
    extra = {LABEL_COMPONENT: COMPONENT, LABEL_REVISION: str(revision.revision)}
    meta = _meta(deployment, name, extra)
    meta["annotations"] = {"llmops.dev/model-uri": revision.model_uri, "llmops.dev/digest": revision.digest}
    apps = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
        "replicas": replicas, "selector": {"matchLabels": selector(deployment, revision.revision)},
        # In-place updates (resources, placement) never drop below the ready pods there are.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": template}}
    return [config_map(_meta(deployment, name, extra), server_config(deployment)), apps,
            service(deployment, name, selector(deployment, revision.revision), extra)]


def service(deployment: Deployment, name: str, pods: dict[str, str],
            extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A ClusterIP Service on the server port (named `http`, as the PodMonitor expects)."""
    port = deployment.spec.server.port
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(deployment, name, extra_labels),
            "spec": {"selector": pods, "ports": [{"name": PORT_NAME, "port": port, "targetPort": PORT_NAME}]}}


def url(deployment: Deployment) -> str:
    meta = deployment.metadata
    return f"http://{meta.name}.{meta.namespace}.svc:{deployment.spec.server.port}/v1"
