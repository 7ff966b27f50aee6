"""The thin Kopf layer: observe (indexes of owned children), call the pure reconcile, act (apply, status).

Level-based (ARCHITECTURE §3): one reconcile per resource, triggered by the resource's own events, by
events of the children it owns, and by a slow timer as a safety net. Re-running it changes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client import ApiException
from pydantic import ValidationError

from llmops.operator.api.v1alpha1 import GROUP, VERSION, Dataset, Resource
from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.reconcile import dataset
from llmops.operator.reconcile.conditions import set_condition
from llmops.operator.reconcile.diff import is_subset, merge_patch
from llmops.operator.reconcile.objects import LABEL_KIND, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY
from llmops.operator.reconcile.workload import Decision

from .kube import KubeWriter
from .metrics import OperatorMetrics
from .settings import OperatorSettings

RESYNC_SECONDS = 60.0
Key = tuple[str, str]


@dataclass(frozen=True)
class Kind:
    """How one kind is reconciled: its model, its pure reconcile, the child kinds it owns."""

    model: type[Resource]
    reconcile: Callable[[Any, dict[str, list[dict[str, Any]]], OperatorSettings, datetime], Decision]

    @property
    def name(self) -> str:
        return self.model.model_fields["kind"].default

    @property
    def plural(self) -> str:
        return self.model.names.plural


KINDS = (Kind(Dataset, dataset.reconcile),)
OWNED = (("batch", "v1", "jobs"), ("", "v1", "configmaps"))  # child kinds, each indexed by owner


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


class Controller:
    """Observe -> decide -> act for every kind in KINDS; serialises reconciles of one resource."""

    def __init__(self, settings: OperatorSettings, writer: KubeWriter, metrics: OperatorMetrics):
        self.settings, self.writer, self.metrics = settings, writer, metrics
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._phases: dict[tuple[str, str, str], str] = {}

    async def reconcile(self, kind: Kind, body: dict[str, Any], children: dict[str, list[dict[str, Any]]]) -> None:
        meta = body["metadata"]
        key = (kind.name, meta["namespace"], meta["name"])
        lock = self._locks.setdefault(key, asyncio.Lock())
        started, outcome = time.perf_counter(), "success"
        async with lock:
            try:
                await self._reconcile(kind, body, children)
            except ApiException as error:
                outcome = "retry" if error.status == 409 else "error"
                raise kopf.TemporaryError(f"API error {error.status}: {error.reason}", delay=2) from error
            except Exception:
                outcome = "error"
                raise
            finally:
                self.metrics.reconciles.labels(kind.name, outcome).inc()
                self.metrics.reconcile_seconds.labels(kind.name).observe(time.perf_counter() - started)

    async def _reconcile(self, kind: Kind, body: dict[str, Any], children: dict[str, list[dict[str, Any]]]) -> None:
        now = datetime.now(UTC)
        try:
            resource = kind.model.model_validate(body)
            decision = kind.reconcile(resource, children, self.settings, now)
        except (ValidationError, NotImplementedError) as error:
            # Admission should have caught it; if not (e.g. an unsupported option), say so and stop.
            await self._fail(kind, body, "InvalidSpec", str(error), now)
            return

        wanted = {(c["kind"], c["metadata"]["name"]) for c in decision.children}
        existing = {(c["kind"], c["metadata"]["name"]): c for group in children.values() for c in group}
        for child in decision.children:
            stored = existing.get((child["kind"], child["metadata"]["name"]))
            if stored is None or not is_subset(child, stored):
                await asyncio.to_thread(self.writer.apply, child)
        for (child_kind, name), stale in existing.items():
            if (child_kind, name) not in wanted:
                await asyncio.to_thread(self.writer.delete, stale)

        await self._write_status(kind, body, decision.status)
        for event in decision.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        self._count_phase(kind, body, decision.status.get("phase"))

    async def _write_status(self, kind: Kind, body: dict[str, Any], status: dict[str, Any]) -> None:
        patch = merge_patch(body.get("status") or {}, status)
        if patch:
            meta = body["metadata"]
            await asyncio.to_thread(self.writer.patch_status, kind.plural, meta["namespace"], meta["name"], patch)

    async def _fail(self, kind: Kind, body: dict[str, Any], reason: str, message: str, now: datetime) -> None:
        status = kind.model.field_model("status").model_validate(body.get("status") or {})
        status.phase = Phase.FAILED
        generation = body["metadata"].get("generation")
        set_condition(status.conditions, "Failed", True, reason, message, now, generation)
        set_condition(status.conditions, "Ready", False, reason, message, now, generation)
        status.observed_generation = generation
        await self._write_status(kind, body, status.to_wire())
        kopf.event(body, type="Warning", reason=reason, message=message[:1024])
        self._count_phase(kind, body, Phase.FAILED)

    def forget(self, kind: Kind, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (kind.name, meta["namespace"], meta["name"])
        self._locks.pop(key, None)
        self._phases.pop(key, None)
        self._refresh_gauge()

    def _count_phase(self, kind: Kind, body: dict[str, Any], phase: str | None) -> None:
        meta = body["metadata"]
        self._phases[(kind.name, meta["namespace"], meta["name"])] = phase or "Unknown"
        self._refresh_gauge()

    def _refresh_gauge(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for (kind_name, _, _), phase in self._phases.items():
            counts[(kind_name, phase)] = counts.get((kind_name, phase), 0) + 1
        self.metrics.resources.clear()
        for (kind_name, phase), count in counts.items():
            self.metrics.resources.labels(kind_name, phase).set(count)


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Register indexes and handlers for every kind on `registry`."""
    managed = {LABEL_MANAGED_BY: MANAGED_BY}

    def owner_key(namespace: str, labels: dict[str, str]) -> tuple[str, str, str]:
        return (namespace, labels[LABEL_KIND], labels[LABEL_NAME])

    for group, version, plural in OWNED:
        index_name = f"owned_{plural}"

        def index(namespace: str, labels: dict[str, str], body: kopf.Body, **_: Any) -> dict[Any, Any]:
            return {owner_key(namespace, labels): _snapshot(body)}

        kopf.index(group, version, plural, labels=managed, id=index_name, registry=registry)(index)

    def children_of(namespace: str, kind_name: str, name: str, indexes: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for _, _, plural in OWNED:
            store = indexes[f"owned_{plural}"].get((namespace, kind_name, name), [])
            for child in store:
                out.setdefault(child["kind"], []).append(child)
        return out

    for kind in KINDS:
        _register_kind(registry, controller, kind, children_of, managed)


def _register_kind(registry: kopf.OperatorRegistry, controller: Controller, kind: Kind,
                   children_of: Callable[..., dict[str, list[Any]]], managed: dict[str, str]) -> None:
    own_index = f"{kind.plural}_by_name"

    def index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): _snapshot(body)}

    kopf.index(GROUP, VERSION, kind.plural, id=own_index, registry=registry)(index)

    async def on_event(type: str, body: kopf.Body, namespace: str, name: str, **kwargs: Any) -> None:
        if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
            controller.forget(kind, dict(body))
            return
        await controller.reconcile(kind, _snapshot(body), children_of(namespace, kind.name, name, kwargs))

    async def on_child_event(namespace: str, labels: dict[str, str], **kwargs: Any) -> None:
        for owner in kwargs[own_index].get((namespace, labels[LABEL_NAME]), []):
            await controller.reconcile(kind, owner, children_of(namespace, kind.name, labels[LABEL_NAME], kwargs))

    async def resync(body: kopf.Body, namespace: str, name: str, **kwargs: Any) -> None:
        await controller.reconcile(kind, _snapshot(body), children_of(namespace, kind.name, name, kwargs))

    kopf.on.event(GROUP, VERSION, kind.plural, id=f"{kind.plural}-event", registry=registry)(on_event)
    for group, version, plural in OWNED:
        kopf.on.event(group, version, plural, labels={**managed, LABEL_KIND: kind.name},
                      id=f"{kind.plural}-{plural}-event", registry=registry)(on_child_event)
    kopf.timer(GROUP, VERSION, kind.plural, interval=RESYNC_SECONDS, idle=RESYNC_SECONDS,
               id=f"{kind.plural}-resync", registry=registry)(resync)
