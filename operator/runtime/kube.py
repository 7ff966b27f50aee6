"""The operator's writes: server-side apply of children, deletes, status and finalizer patches, Events.

Every write names one field manager, FIELD_MANAGER, so `metadata.managedFields` shows one owner for all the
operator wrote (the API server would otherwise name the client's User-Agent: "OpenAPI-Generator").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client

from llmops.operator.api.v1alpha1 import GROUP, VERSION
from llmops.operator.reconcile.objects import FIELD_MANAGER

MANAGER = [("fieldManager", FIELD_MANAGER)]
USER_AGENT = f"{FIELD_MANAGER}/python"
"""For the writes that take no fieldManager (a Lease written by the client's generated API): the API server
names the manager after the User-Agent up to its first slash."""
EVENT_MESSAGE_LIMIT = 1024

# Plural of each child kind we write, for the REST path (no discovery round trips needed).
PLURALS = {"Job": "jobs", "ConfigMap": "configmaps", "Service": "services", "Deployment": "deployments",
           "RayJob": "rayjobs", "HTTPRoute": "httproutes", "InferencePool": "inferencepools"}


def _path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


class KubeWriter:
    """Thin, blocking I/O; callers run it in a thread. Reports each write (llmops_api_writes_total).

    Its reads (`read_log`, `list_events`, `serves`) are here because they are no watches: the indexes cannot give
    them.
    """

    def __init__(self, api: client.ApiClient, on_write: Callable[[str], None] = lambda _: None):
        self.api = api
        self.on_write = on_write

    def _request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                 query: list[tuple[str, str]] | None = None, accept: str = "application/json",
                 timeout: float | None = None) -> bytes:
        """One HTTP request on the client's connection pool (its TLS and credentials), bytes in and out: the
        generated client's request helpers change shape between its releases, its pool and configuration do not."""
        config = self.api.configuration
        headers = {"Content-Type": content_type, "Accept": accept, "User-Agent": USER_AGENT}
        for auth in config.auth_settings().values():  # a bearer token (refreshed by the client's hook if it has one)
            if auth["in"] == "header" and auth["value"]:
                headers[auth["key"]] = auth["value"]
        data = body if body is None or isinstance(body, str | bytes) else json.dumps(body)
        response = self.api.rest_client.pool_manager.request(
            method, config.host + path + (f"?{urlencode(query)}" if query else ""), body=data, headers=headers,
            timeout=urllib3.Timeout(total=timeout) if timeout else None)
        if not 200 <= response.status < 300:
            error = client.ApiException(status=response.status, reason=response.reason)
            error.body, error.headers = response.data, response.headers
            raise error
        return bytes(response.data or b"")

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              query: list[tuple[str, str]] | None = None, write: str | None = None) -> Any:
        self.on_write(write or ("status" if path.endswith("/status") else method.lower()))
        data = self._request(method, path, body, content_type, query)
        return json.loads(data) if data else None

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply: create or converge the object to exactly the fields we own."""
        meta = obj["metadata"]
        self._call("PATCH", _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
                   body=json.dumps(obj), content_type="application/apply-patch+yaml",
                   query=[*MANAGER, ("force", "true")])

    def delete(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            self._call("DELETE", _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
                       body={"propagationPolicy": "Background"})
        except client.ApiException as error:
            if error.status != 404:
                raise

    def set_finalizers(self, plural: str, namespace: str, name: str, finalizers: list[str],
                       resource_version: str) -> None:
        """Replace one of our resources' finalizers. The resourceVersion makes a concurrent change (another
        controller's finalizer) a 409, retried with a fresh read, instead of being overwritten."""
        self._call("PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}",
                   body={"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}},
                   content_type="application/merge-patch+json", query=MANAGER)

    def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """Merge-patch the status subresource (status is ours alone, so no apply semantics are needed)."""
        self._call("PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status",
                   body={"status": patch}, content_type="application/merge-patch+json", query=MANAGER)

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an Event about one of our resources (`involved`: its body), as `kubectl describe` shows them."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"],
                               "namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:EVENT_MESSAGE_LIMIT], "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
        }
        self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event, query=MANAGER,
                   write="event")

    def read_log(self, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int,
                 timeout: float = 10) -> str:
        """The last `tail_lines` lines of a container's log, at most `limit_bytes` (a read: no write counted).
        Decoded leniently: a workload may print any bytes."""
        data = self._request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log",
                             query=[("container", container), ("tailLines", str(tail_lines)),
                                    ("limitBytes", str(limit_bytes))], accept="*/*", timeout=timeout)
        return data.decode("utf-8", errors="replace")

    def list_events(self, namespace: str, field_selector: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Events of one namespace matching a field selector (a read: no write counted)."""
        data = self._request("GET", f"/api/v1/namespaces/{namespace}/events",
                             query=[("fieldSelector", field_selector)], timeout=timeout)
        items: list[dict[str, Any]] = json.loads(data).get("items", [])
        return items

    def serves(self, api_version: str, plural: str, timeout: float = 10) -> bool:
        """Whether the API server serves `plural` in group/version `api_version` (discovery; 404: not installed)."""
        try:
            data = self._request("GET", f"/apis/{api_version}", timeout=timeout)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in json.loads(data).get("resources", []))
