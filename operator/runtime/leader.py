"""Leader election on a coordination.k8s.io Lease, as controller-runtime does it.

Kopf's own peering freezes every replica when two of equal priority meet, so two identical replicas
cannot use it for high availability. Instead the operator acquires a Lease before it starts Kopf: the
standby replica watches nothing and takes over once the leader stops renewing for a lease duration.
A leader that cannot renew in time stops acting (and exits), so two replicas never act together.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from llmops.operator.reconcile.objects import FIELD_MANAGER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease that decide who leads."""

    holder: str | None
    renew_time: datetime | None
    duration_seconds: int
    transitions: int = 0


class Action(Enum):
    CREATE = "create"      # no Lease yet: create it holding it
    RENEW = "renew"        # we hold it: renew
    TAKE_OVER = "take-over"  # the holder let it expire (or released it): take it
    WAIT = "wait"          # someone else holds a live lease


def decide(lease: LeaseRecord | None, me: str, now: datetime) -> Action:
    """Pure decision of one election round."""
    if lease is None:
        return Action.CREATE
    if lease.holder == me:
        return Action.RENEW
    if not lease.holder or lease.renew_time is None:
        return Action.TAKE_OVER
    if now >= lease.renew_time + timedelta(seconds=lease.duration_seconds):
        return Action.TAKE_OVER
    return Action.WAIT


def _micro_time(value: datetime) -> str:
    # Lease times are MicroTime: RFC 3339 with microseconds.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires and renews one Lease. `acquired` is set while leading; `lost` once leadership is lost."""

    def __init__(self, api: client.CoordinationV1Api, name: str, namespace: str, identity: str,
                 duration_seconds: int):
        self.api, self.name, self.namespace = api, name, namespace
        self.identity, self.duration = identity, duration_seconds
        self.acquired = asyncio.Event()
        self.lost = asyncio.Event()
        self._last_renewal: datetime | None = None

    def _read(self) -> tuple[LeaseRecord | None, Any]:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None, None
            raise
        spec = lease.spec
        record = LeaseRecord(spec.holder_identity, spec.renew_time, spec.lease_duration_seconds or self.duration,
                             spec.lease_transitions or 0)
        return record, lease

    def _body(self, now: datetime, transitions: int, acquire_time: datetime | None, holder: str | None,
              resource_version: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         **({"resourceVersion": resource_version} if resource_version else {})},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": self.duration,
                "acquireTime": _micro_time(acquire_time or now),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    def try_once(self, now: datetime | None = None) -> bool:
        """One election round (blocking I/O). Returns whether we lead after it."""
        now = now or datetime.now(UTC)
        record, lease = self._read()
        action = decide(record, self.identity, now)
        try:
            if action is Action.CREATE:
                self.api.create_namespaced_lease(self.namespace, self._body(now, 0, now, self.identity),
                                                 field_manager=FIELD_MANAGER)
            elif action is Action.RENEW:
                self.api.replace_namespaced_lease(self.name, self.namespace, self._body(
                    now, record.transitions, lease.spec.acquire_time, self.identity, lease.metadata.resource_version),
                    field_manager=FIELD_MANAGER)
            elif action is Action.TAKE_OVER:
                self.api.replace_namespaced_lease(self.name, self.namespace, self._body(
                    now, record.transitions + 1, now, self.identity, lease.metadata.resource_version),
                    field_manager=FIELD_MANAGER)
            else:
                return False
        except ApiException as error:
            if error.status in (409, 422):  # another replica won the race (optimistic concurrency)
                return False
            raise
        self._last_renewal = now
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign until leading, then renew every third of the lease; set `lost` if renewal lapses."""
        retry = max(1.0, self.duration / 3)
        while not stop.is_set():
            try:
                leading = await asyncio.to_thread(self.try_once)
                # Another replica holds the lease now (or won a write race): we lead no more.
                lost = self.acquired.is_set() and not leading
            except Exception:  # an API outage: keep acting only while our last renewal is fresh
                log.exception("leader election round failed")
                leading, lost = False, self.acquired.is_set() and self._lapsed()
            if leading and not self.acquired.is_set():
                log.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
                self.acquired.set()
            if lost:
                log.error("lost lease %s/%s: stopping so that only one replica acts", self.namespace, self.name)
                self.lost.set()
                return
            try:
                await asyncio.wait_for(stop.wait(), timeout=retry)
            except TimeoutError:
                pass

    def _lapsed(self) -> bool:
        # Stop acting before the lease expires for others: a safety margin of one retry period.
        if self._last_renewal is None:
            return True
        margin = timedelta(seconds=self.duration * 2 / 3)
        return datetime.now(UTC) >= self._last_renewal + margin

    def release(self) -> None:
        """Give the lease up at shutdown so the standby takes over at once."""
        try:
            record, lease = self._read()
            if record is not None and record.holder == self.identity:
                now = datetime.now(UTC)
                self.api.replace_namespaced_lease(self.name, self.namespace, self._body(
                    now, record.transitions, lease.spec.acquire_time, None, lease.metadata.resource_version),
                    field_manager=FIELD_MANAGER)
                log.info("released lease %s/%s", self.namespace, self.name)
        except ApiException:
            log.warning("could not release lease %s/%s", self.namespace, self.name, exc_info=True)
