"""Splitting a Deployment's traffic between its revisions: the stable entry point and the route.

Three ways, chosen by what the cluster serves (settings.traffic_router, resolved by discovery):
- httpRoute: one HTTPRoute `<name>` with weighted backendRefs to each revision's Service (Gateway API semantics:
  a backend's share is its weight over the sum of weights);
- inferencePool: one InferencePool `<name>-r<N>` (and its endpoint picker) per revision, weighted the same way in
  the HTTPRoute, as the Gateway API Inference Extension's rollout guide does;
- replicas: no router; the `<name>` Service selects the ready pods of every revision, so the split is the ratio of
  ready pods (approximate, shown in status as the effective weight).
The `<name>` Service is the stable in-cluster entry point in every mode (with a router it selects the stable's
pods only, so clients that bypass the gateway never reach a canary).
"""

from __future__ import annotations

from typing import Any

from llmops.operator.api.v1alpha1.deployment import Deployment
from llmops.operator.settings import OperatorSettings, TrafficRouter

from ..objects import labels, owner_reference
from .revisions import revision_name, selector, service

GATEWAY_GROUP = "gateway.networking.k8s.io"
POOL_GROUP = "inference.networking.k8s.io"
EPP_PORT = 9002
EPP_SUFFIX = "epp"


def _meta(deployment: Deployment, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": deployment.metadata.namespace, "labels": labels(deployment),
            "ownerReferences": [owner_reference(deployment)]}


def parent_refs(deployment: Deployment, settings: OperatorSettings) -> list[dict[str, Any]]:
    refs = [r.to_wire() for r in deployment.spec.route.parent_refs]
    if not refs:
        refs = [r.model_dump(by_alias=True, exclude_none=True) for r in settings.gateway_parent_refs]
    return refs


def _backend(deployment: Deployment, revision: int, weight: int, router: TrafficRouter) -> dict[str, Any]:
    name = revision_name(deployment, revision)
    if router is TrafficRouter.INFERENCE_POOL:
        return {"group": POOL_GROUP, "kind": "InferencePool", "name": name, "weight": weight}
    return {"name": name, "port": deployment.spec.server.port, "weight": weight}


def http_route(deployment: Deployment, weights: dict[int, int], router: TrafficRouter,
               settings: OperatorSettings) -> dict[str, Any]:
    """The route: one rule whose backends are the revisions with their weights (a weight 0 backend stays listed,
    so a rollback is a weight change, not a route rewrite)."""
    spec: dict[str, Any] = {
        "parentRefs": parent_refs(deployment, settings),
        "rules": [{"backendRefs": [_backend(deployment, revision, weight, router)
                                   for revision, weight in sorted(weights.items())]}],
    }
    if deployment.spec.route.hostnames:
        spec["hostnames"] = list(deployment.spec.route.hostnames)
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute",
            "metadata": _meta(deployment, deployment.metadata.name), "spec": spec}


def inference_pool(deployment: Deployment, revision: int, settings: OperatorSettings) -> list[dict[str, Any]]:
    """One revision's InferencePool, and the endpoint picker (Deployment + Service) that the pool names."""
    name = revision_name(deployment, revision)
    epp = f"{name}-{EPP_SUFFIX}"
    epp_labels = {**labels(deployment), "app.kubernetes.io/component": "endpoint-picker", "llmops.dev/pool": name}
    pool = {"apiVersion": f"{POOL_GROUP}/v1", "kind": "InferencePool", "metadata": _meta(deployment, name), "spec": {
        "selector": {"matchLabels": selector(deployment, revision)},
        "targetPorts": [{"number": deployment.spec.server.port}],
        "endpointPickerRef": {"name": epp, "port": {"number": EPP_PORT}}}}
    epp_meta = {**_meta(deployment, epp), "labels": epp_labels}
    picker = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": epp_meta,
              "spec": {"replicas": 1, "selector": {"matchLabels": epp_labels}, "template": {
                  "metadata": {"labels": epp_labels},
                  "spec": {"containers": [{
                      "name": EPP_SUFFIX, "image": settings.epp_image,
                      "args": ["--pool-name", name, "--pool-namespace", deployment.metadata.namespace or "default"],
                      "ports": [{"name": "grpc", "containerPort": EPP_PORT}]}]}}}}
    picker_service = {"apiVersion": "v1", "kind": "Service", "metadata": epp_meta,
                      "spec": {"selector": epp_labels, "ports": [{"name": "grpc", "port": EPP_PORT,
                                                                  "appProtocol": "http2"}]}}
    return [pool, picker, picker_service]


def entry_children(deployment: Deployment, stable: int | None, weights: dict[int, int], router: TrafficRouter,
                   settings: OperatorSettings) -> list[dict[str, Any]]:
    """The `<name>` Service, and the route with its pools when a router is used. `weights`: revision -> percent
    of traffic, for every revision that has pods (zero for those that must get none)."""
    name = deployment.metadata.name
    if router is TrafficRouter.REPLICAS:
        return [service(deployment, name, selector(deployment))]
    pods = selector(deployment, stable) if stable is not None else selector(deployment, next(iter(weights), 0))
    out = [service(deployment, name, pods)]
    if weights:
        out.append(http_route(deployment, weights, router, settings))
    if router is TrafficRouter.INFERENCE_POOL:
        for revision in sorted(weights):
            out += inference_pool(deployment, revision, settings)
    return out
