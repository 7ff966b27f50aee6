"""The thin Kopf layer: observe (indexes of owned children), call the pure reconcile, act (apply, status).

Level-based (ARCHITECTURE §3): one reconcile per resource, triggered by the resource's own events, by
events of the children it owns, and by the controller's own schedule (schedule.py: a slow resync as a safety
net, a Decision's requeue, API-error retries, polls for stuck Jobs and live progress). Re-running it changes
nothing. No Kopf timer is used: Kopf would put a finalizer on every resource for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
import urllib3
from kubernetes.client import ApiException
from pydantic import ValidationError

from llmops.operator.api.v1alpha1 import (
    GROUP,
    VERSION,
    Dataset,
    Deployment,
    Evaluation,
    FineTune,
    PretrainJob,
    Resource,
)
from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.backends import kubernetes
from llmops.operator.reconcile import artifacts, dataset, deployment, evaluation, finetune, pretrainjob, rayjob
from llmops.operator.reconcile.conditions import set_condition
from llmops.operator.reconcile.diff import is_subset, merge_patch
from llmops.operator.reconcile.jobs import CONTAINER, job_and_pods
from llmops.operator.reconcile.objects import LABEL_KIND, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY
from llmops.operator.reconcile.progress import ProgressReport, parse_progress, rank_zero_pod, with_progress
from llmops.operator.reconcile.quota import event_field_selector, needs_event_read
from llmops.operator.reconcile.workload import Decision

from ..settings import KubeRayMode, OperatorSettings, TrafficRouter
from . import api_errors
from .kube import KubeWriter
from .metrics import OperatorMetrics
from .schedule import RESYNC_SECONDS, STUCK_POLL_SECONDS, next_poll, next_wake, poll_interval, reconcile_delay

# The indexes lag behind our own writes by a watch round trip. For this long after a write we trust what we
# wrote over an index that still shows the older state, so one change does not cause repeated writes (and
# repeated Events). After it, the index is the truth again, so drift is still corrected.
READ_YOUR_WRITES_SECONDS = 10.0
# How much of a workload's log one progress read fetches: the trainers print a report every few seconds at most,
# one line of a few hundred bytes each, so the newest report is well inside.
PROGRESS_TAIL_LINES = 50
PROGRESS_LIMIT_BYTES = 64 * 1024
# A Job that should have pods and has none (refused by a quota, by admission) only says why in its Events. They are
# read with one field-selected list call per such Job, at most this often, and a Pending resource is polled at this
# pace. A watch on Events would stream every Event of every watched namespace (the busiest kind in a cluster) to
# find a rare one; this costs nothing while Jobs get their pods, one read per stuck Job otherwise.
EVENT_READ_SECONDS = STUCK_POLL_SECONDS
# How long the answer "does the cluster serve RayJobs" is kept (kuberay: auto), so installing KubeRay later counts.
DISCOVERY_SECONDS = 120.0
Key = tuple[str, str]
log = logging.getLogger("llmops.operator.progress")


@dataclass(frozen=True)
class Kind:
    """How one kind is reconciled: its model, its pure reconcile, the child kinds it owns."""

    model: type[Resource]
    reconcile: Callable[[Any, dict[str, list[dict[str, Any]]], dict[tuple[str, str], Any], OperatorSettings,
                         datetime], Decision]
    references: Callable[[Any], list[tuple[str, str]]]
    """(kind, name) of the resources this one waits for; their events re-trigger its reconcile."""

    @property
    def name(self) -> str:
        return self.model.model_fields["kind"].default

    @property
    def plural(self) -> str:
        return self.model.names.plural


KINDS = (Kind(Dataset, kubernetes.reconciler(dataset), dataset.references),
         Kind(PretrainJob, kubernetes.reconciler(pretrainjob), pretrainjob.references),
         Kind(FineTune, kubernetes.reconciler(finetune), finetune.references),
         Kind(Evaluation, kubernetes.reconciler(evaluation), evaluation.references),
         Kind(Deployment, deployment.reconcile, deployment.references))
# Child kinds, each indexed by owner. Pods are only read (a workload's results, failure causes), never written.
# Routes and pools are watched only while the cluster serves them (Kopf skips a kind that is not served).
OWNED = (("batch", "v1", "jobs"), ("", "v1", "configmaps"), ("", "v1", "services"), ("", "v1", "pods"),
         ("apps", "v1", "deployments"), ("gateway.networking.k8s.io", "v1", "httproutes"),
         ("inference.networking.k8s.io", "v1", "inferencepools"))
RAY_OWNED = ("ray.io", "v1", "rayjobs")
WRITTEN = {"Job", "ConfigMap", "Service", "Deployment", "HTTPRoute", "InferencePool", rayjob.KIND}
# What a write can fail with besides an HTTP answer: the connection (refused, reset, timed out).
CONNECTION_ERRORS = (OSError, urllib3.exceptions.HTTPError)


def owned(settings: OperatorSettings) -> tuple[tuple[str, str, str], ...]:
    """The child kinds to index. RayJobs only where KubeRay may be used: without the chart's permission a watch
    would be refused. Kopf watches a kind only while the cluster serves it, so an absent CRD costs nothing."""
    return (*OWNED, RAY_OWNED) if settings.kuberay is not KubeRayMode.OFF else OWNED


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


class Controller:
    """Observe -> decide -> act for every kind in KINDS; serialises reconciles of one resource."""

    def __init__(self, settings: OperatorSettings, writer: KubeWriter, metrics: OperatorMetrics):
        self.settings, self.writer, self.metrics = settings, writer, metrics
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._phases: dict[tuple[str, str, str], str] = {}
        self._written_status: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        self._written_finalizers: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        self._applied: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
        self._progress: dict[tuple[str, str, str], ProgressReport] = {}
        self._log_forbidden_said = False
        # Per resource: Job uid -> (when read, the Job's FailedCreate Events).
        self._job_events: dict[tuple[str, str, str], dict[str, tuple[float, list[dict[str, Any]]]]] = {}
        self._resolved: tuple[float, OperatorSettings] | None = None
        self._metric_reads: Any = None
        # Per resource: the pending wake (schedule.py), when its next full reconcile and its next poll are due
        # (monotonic), and how many transient API errors in a row it met (the retry backoff).
        self._requeues: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self._reconcile_at: dict[tuple[str, str, str], float] = {}
        self._poll_at: dict[tuple[str, str, str], float] = {}
        self._failures: dict[tuple[str, str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Events go through threads of their own: in a burst (many resources change phase at once) no child apply
        # or status write waits behind them in the shared pool of asyncio.to_thread.
        self._event_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmops-events")
        self.indexes: dict[str, Any] | None = None
        """Kopf's indexes as last passed to a handler (live views): what a requeued reconcile observes."""

    async def effective_settings(self) -> OperatorSettings:
        """The settings the pure reconcile sees: kuberay and the traffic router resolved by discovery (auto is
        never seen there), kept a while."""
        auto_ray = self.settings.kuberay is KubeRayMode.AUTO
        auto_router = self.settings.traffic_router is TrafficRouter.AUTO
        if not auto_ray and not auto_router:
            return self.settings
        if self._resolved is None or time.monotonic() - self._resolved[0] > DISCOVERY_SECONDS:
            try:
                update: dict[str, Any] = {}
                if auto_ray:
                    group, version, plural = RAY_OWNED
                    served = await asyncio.to_thread(self.writer.serves, f"{group}/{version}", plural)
                    update["kuberay"] = KubeRayMode.ON if served else KubeRayMode.OFF
                if auto_router:
                    update["traffic_router"] = await self._discover_router()
            except (ApiException, *CONNECTION_ERRORS) as error:
                log.debug("discovery failed: %s", error)
                if self._resolved is not None:
                    return self._resolved[1]  # keep the last answer; ask again next time
                update = {"kuberay": KubeRayMode.OFF} if auto_ray else {}
                if auto_router:
                    update["traffic_router"] = TrafficRouter.REPLICAS
            self._resolved = (time.monotonic(), self.settings.model_copy(update=update))
        return self._resolved[1]

    async def _discover_router(self) -> TrafficRouter:
        """InferencePool when served (it needs HTTPRoute too), else HTTPRoute, else the replica ratio."""
        if not await asyncio.to_thread(self.writer.serves, "gateway.networking.k8s.io/v1", "httproutes"):
            return TrafficRouter.REPLICAS
        if await asyncio.to_thread(self.writer.serves, "inference.networking.k8s.io/v1", "inferencepools"):
            return TrafficRouter.INFERENCE_POOL
        return TrafficRouter.HTTPROUTE

    @property
    def metric_reads(self) -> Any:
        """The canary analysis' metric sources, made on first use (most operators never run a canary)."""
        if self._metric_reads is None:
            from .analysis_reads import MetricReads

            self._metric_reads = MetricReads(self.settings.prometheus_url)
        return self._metric_reads

    def stuck_jobs(self, children: dict[str, list[dict[str, Any]]], now: datetime) -> list[dict[str, Any]]:
        """Owned Jobs that should have pods by now and have none."""
        out = []
        for job in children.get("Job", []):
            _, pods = job_and_pods(children, job["metadata"]["name"])
            if needs_event_read(job, pods, now):
                out.append(job)
        return out

    async def with_job_events(self, owner: tuple[str, str, str], children: dict[str, list[dict[str, Any]]]
                              ) -> dict[str, list[dict[str, Any]]]:
        """`children` plus the FailedCreate Events of stuck Jobs (kind "Event"), each Job's read rate-limited.
        A Job with pods, or gone, drops out of the cache, so its old Events never outlive the trouble."""
        stuck = self.stuck_jobs(children, datetime.now(UTC))
        cache = self._job_events.get(owner, {})
        fresh: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        for job in stuck:
            uid = job["metadata"].get("uid", "")
            read = cache.get(uid)
            if read is None or time.monotonic() - read[0] >= EVENT_READ_SECONDS:
                try:
                    items = await asyncio.to_thread(self.writer.list_events, owner[1], event_field_selector(job))
                except (ApiException, *CONNECTION_ERRORS) as error:
                    log.debug("reading the Events of Job %s/%s failed: %s", owner[1], job["metadata"]["name"], error)
                    items = read[1] if read else []
                read = (time.monotonic(), items)
            fresh[uid] = read
        if fresh:
            self._job_events[owner] = fresh
        else:
            self._job_events.pop(owner, None)
        events = [e for _, items in fresh.values() for e in items]
        return {**children, "Event": events} if events else children

    def _recent(self, cache: dict[Any, tuple[float, dict[str, Any]]], key: Any) -> dict[str, Any] | None:
        entry = cache.get(key)
        if entry is None or time.monotonic() - entry[0] > READ_YOUR_WRITES_SECONDS:
            cache.pop(key, None)
            return None
        return entry[1]

    async def reconcile(self, kind: Kind, body: dict[str, Any], children: dict[str, list[dict[str, Any]]],
                        refs: dict[tuple[str, str], Any]) -> None:
        meta = body["metadata"]
        key = (kind.name, meta["namespace"], meta["name"])
        lock = self._locks.setdefault(key, asyncio.Lock())
        started, outcome = time.perf_counter(), "success"
        async with lock:
            try:
                delay = reconcile_delay(await self._reconcile(kind, body, children, refs))
                self._failures.pop(key, None)
            except (ApiException, *CONNECTION_ERRORS) as error:
                outcome, delay = await self._api_error(kind, body, key, error)
            except Exception:  # a bug: say so, and look again at the resync (a hot retry would only repeat it)
                log.exception("reconciling %s %s/%s failed", *key)
                outcome, delay = "error", RESYNC_SECONDS
            finally:
                self.metrics.reconciles.labels(kind.name, outcome).inc()
                self.metrics.reconcile_seconds.labels(kind.name).observe(time.perf_counter() - started)
            self._reconcile_at[key] = time.monotonic() + delay
            self._arm(kind, key)

    async def _api_error(self, kind: Kind, body: dict[str, Any], key: tuple[str, str, str],
                         error: Exception) -> tuple[str, float]:
        """The outcome (for the metric) and the delay to the next reconcile after an API error (api_errors.py)."""
        failures = self._failures.get(key, 0) + 1
        if isinstance(error, ApiException):
            answer = api_errors.decide(error.status or None, failures, body=error.body, reason=str(error.reason),
                                       retry_after_header=(error.headers or {}).get("Retry-After"))
        else:
            answer = api_errors.decide(None, failures)
        if isinstance(answer, api_errors.Retry):
            self._failures[key] = failures
            log.info("%s %s/%s: %s; retrying in %.0f s", *key, _describe(error), answer.delay)
            return "retry", answer.delay
        self._failures.pop(key, None)
        await self._refused(kind, body, answer)
        return "error", RESYNC_SECONDS

    async def _reconcile(self, kind: Kind, body: dict[str, Any], children: dict[str, list[dict[str, Any]]],
                         refs: dict[tuple[str, str], Any]) -> float | None:
        """Observe, decide, act; returns the delay the Decision asked to be reconciled again after."""
        now = datetime.now(UTC)
        meta = body["metadata"]
        key = (kind.name, meta["namespace"], meta["name"])
        written = self._recent(self._written_status, key)
        if written is not None and written != body.get("status"):
            body = {**body, "status": written}  # the index has not seen our last status write yet
        settings = await self.effective_settings()
        release = False  # a deleting resource whose artifacts are gone: drop our finalizer at the end
        try:
            resource = kind.model.model_validate(body)
            if kind.model is Deployment and (wanted := deployment.metrics_wanted(resource, now)) is not None:
                refs = {**refs, deployment.METRICS_KEY: await asyncio.to_thread(
                    self.metric_reads.read, resource, children, wanted, now)}
            if meta.get("deletionTimestamp"):
                decision, release = artifacts.deletion(resource, body.get("status") or {}, children, settings, now)
            else:
                decision = kind.reconcile(resource, children, refs, settings, now)
                # A child's event may bring the resource from an index that has not seen our finalizer write yet:
                # patching again would be a conflict (the resourceVersion moved on) for nothing.
                recent = self._recent(self._written_finalizers, key)
                current = recent["finalizers"] if recent is not None else meta.get("finalizers") or []
                if (finalizers := artifacts.finalizers(resource, current, False)) is not None:
                    await asyncio.to_thread(self.writer.set_finalizers, kind.plural, meta["namespace"],
                                            meta["name"], finalizers, meta["resourceVersion"])
                    self._written_finalizers[key] = (time.monotonic(), {"finalizers": finalizers})
        except (ValidationError, NotImplementedError) as error:
            # Admission should have caught it; if not (e.g. an unsupported option), say so and stop.
            await self._fail(kind, body, getattr(error, "reason", "InvalidSpec"), str(error), now)
            return None
        if release:
            # First and alone: the resource is gone once the finalizer is, and a status write before it would
            # change the resourceVersion this patch is conditional on.
            await asyncio.to_thread(self.writer.set_finalizers, kind.plural, meta["namespace"], meta["name"],
                                    [f for f in meta.get("finalizers") or [] if f != artifacts.FINALIZER],
                                    meta["resourceVersion"])
            return None

        wanted = {(c["kind"], c["metadata"]["name"]) for c in decision.children}
        existing = {(c["kind"], c["metadata"]["name"]): c for kind_name, group in children.items()
                    if kind_name in WRITTEN for c in group}
        for child in decision.children:
            child_key = (child["kind"], meta["namespace"], child["metadata"]["name"])
            stored = existing.get((child["kind"], child["metadata"]["name"]))
            if stored is not None and is_subset(child, stored):
                continue
            if stored is None and self._recent(self._applied, child_key) == child:
                continue  # applied a moment ago; the index will show it soon
            await asyncio.to_thread(self.writer.apply, child)
            self._applied[child_key] = (time.monotonic(), child)
        for (child_kind, name), stale in existing.items():
            # Only what this resource controls: labels can be copied (a Job defaults its labels to its pod
            # template's, e.g. KubeRay's submitter Job made from our submitter template), owner references cannot.
            owners = stale["metadata"].get("ownerReferences") or []
            if (child_kind, name) not in wanted and any(o.get("uid") == meta.get("uid") for o in owners):
                await asyncio.to_thread(self.writer.delete, stale)

        if decision.status.get("phase") == Phase.SUCCEEDED and (body.get("status") or {}).get("phase") == Phase.RUNNING:
            # The progress timer stops with Running: read the log once more so the final loss is shown.
            await self.observe_progress(kind, body, children.get("Pod", []))
        await self._write_status(kind, body, with_progress(decision.status, self._progress.get(key)))
        for event in decision.events:
            await self._event(body, event.type, event.reason, event.message)
            if kind.model is Deployment:
                self.metrics.rollouts.labels(event.reason).inc()
        if kind.model is Deployment:
            weight = (decision.status.get("canary") or {}).get("weight", 0)
            self.metrics.canary_weight.labels(meta["namespace"], meta["name"]).set(weight)
        self._count_phase(kind, body, decision.status.get("phase"))
        return decision.requeue_after

    def _arm(self, kind: Kind, key: tuple[str, str, str]) -> None:
        """Wake for `key` at its next poll or its due reconcile, whichever comes first (the latest arming wins):
        as controller-runtime's RequeueAfter, a pause or an analysis interval ends on time."""
        if (pending := self._requeues.pop(key, None)) is not None:
            pending.cancel()
        now = time.monotonic()
        poll_at = next_poll(now, self._poll_at.pop(key, None),
                            poll_interval(self._phases.get(key), self.settings.progress_interval_seconds))
        if poll_at is not None:
            self._poll_at[key] = poll_at
        wake = next_wake(now, self._reconcile_at[key], poll_at)
        self._requeues[key] = asyncio.get_running_loop().call_later(wake.delay, self._wake, kind, key)

    def _wake(self, kind: Kind, key: tuple[str, str, str]) -> None:
        self._requeues.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._woken(kind, key))
        self._tasks.add(task)  # keep a reference until done (the loop holds tasks only weakly)
        task.add_done_callback(self._tasks.discard)

    async def _woken(self, kind: Kind, key: tuple[str, str, str]) -> None:
        """Reconcile when due; before that, poll: a Pending resource's stuck Jobs (a refused pod changes nothing
        we watch) or a Running one's progress. Only a stuck Job or new progress costs a reconcile then."""
        _, namespace, name = key
        indexes = self.indexes
        stored = _first(indexes[_index_id(kind)].get((namespace, name))) if indexes is not None else None
        if stored is None or indexes is None or key not in self._reconcile_at:
            self._reconcile_at.pop(key, None)  # gone, or forgotten while the wake was on its way
            self._poll_at.pop(key, None)
            return
        body = _snapshot(stored)
        if time.monotonic() >= self._reconcile_at[key]:
            await _reconcile_from_indexes(self, kind, body, indexes)
            return
        self._poll_at.pop(key, None)  # this poll is done: the next one is an interval from now
        children = _children_of(namespace, kind, name, indexes)
        phase = (body.get("status") or {}).get("phase")
        if phase == Phase.PENDING and self.stuck_jobs(children, datetime.now(UTC)):
            await _reconcile_from_indexes(self, kind, body, indexes)
        elif phase == Phase.RUNNING and await self.observe_progress(kind, body, children.get("Pod", [])):
            await _reconcile_from_indexes(self, kind, body, indexes)
        elif key in self._reconcile_at and key not in self._requeues:  # not forgotten nor re-armed meanwhile
            self._arm(kind, key)

    async def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an Event about `body`. Events help, but a lost one must not fail the reconcile."""
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._event_pool, self.writer.post_event, body, type_, reason, message)
        except (ApiException, *CONNECTION_ERRORS) as error:
            meta = body["metadata"]
            log.warning("could not record the Event %s of %s/%s: %s", reason, meta["namespace"], meta["name"],
                        _describe(error))

    async def _refused(self, kind: Kind, body: dict[str, Any], refusal: api_errors.Refused) -> None:
        """The API server refused a write (invalid, forbidden): say so in the Ready condition with its message."""
        now = datetime.now(UTC)
        meta = body["metadata"]
        written = self._recent(self._written_status, (kind.name, meta["namespace"], meta["name"]))
        if written is not None:
            body = {**body, "status": written}  # the index may not show our last status write yet
        status = kind.model.field_model("status").model_validate(body.get("status") or {})
        generation = meta.get("generation")
        if not set_condition(status.conditions, "Ready", False, refusal.reason, refusal.message, now, generation):
            return
        try:
            await self._write_status(kind, body, status.to_wire())
        except (ApiException, *CONNECTION_ERRORS) as error:  # e.g. the status write itself is what is refused
            log.warning("%s %s/%s: %s (and the condition could not be written: %s)", kind.name, meta["namespace"],
                        meta["name"], refusal.message, _describe(error))
            return
        await self._event(body, "Warning", refusal.reason, refusal.message)

    async def _write_status(self, kind: Kind, body: dict[str, Any], status: dict[str, Any]) -> None:
        patch = merge_patch(body.get("status") or {}, status)
        if patch:
            meta = body["metadata"]
            await asyncio.to_thread(self.writer.patch_status, kind.plural, meta["namespace"], meta["name"], patch)
            self._written_status[(kind.name, meta["namespace"], meta["name"])] = (time.monotonic(), status)

    async def observe_progress(self, kind: Kind, body: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        """Read the rank-0 pod's log tail of a Running resource; True when it reports progress not shown yet.

        A log that cannot be read (pod not started yet, gone, no log yet) is a normal moment of a run, not an
        error: it is skipped quietly and read again on the next tick.
        """
        meta, status = body["metadata"], body.get("status") or {}
        job_name = status.get("jobName")
        if status.get("phase") != Phase.RUNNING or not job_name:  # the last read happens as Running ends
            return False
        pod = rank_zero_pod(pods, job_name)
        if pod is None:
            return False
        try:
            tail = await asyncio.to_thread(self.writer.read_log, meta["namespace"], pod, CONTAINER,
                                           PROGRESS_TAIL_LINES, PROGRESS_LIMIT_BYTES)
        except ApiException as error:
            if error.status == 403 and not self._log_forbidden_said:  # a setup problem, not a moment of a run
                self._log_forbidden_said = True
                log.warning("no live progress: reading pod logs is forbidden (the operator's role needs pods/log get)")
            log.debug("no log of pod %s/%s yet: HTTP %s %s", meta["namespace"], pod, error.status, error.reason)
            return False
        except (OSError, urllib3.exceptions.HTTPError) as error:  # connection trouble: the next tick tries again
            log.debug("reading the log of pod %s/%s failed: %s", meta["namespace"], pod, error)
            return False
        report = parse_progress(tail, kind.name, job_name)
        key = (kind.name, meta["namespace"], meta["name"])
        if report is None or report == self._progress.get(key):
            return False
        self._progress[key] = report
        return True

    async def _fail(self, kind: Kind, body: dict[str, Any], reason: str, message: str, now: datetime) -> None:
        status = kind.model.field_model("status").model_validate(body.get("status") or {})
        already = status.phase == Phase.FAILED
        status.phase = Phase.FAILED
        generation = body["metadata"].get("generation")
        changed = set_condition(status.conditions, "Failed", True, reason, message, now, generation)
        set_condition(status.conditions, "Ready", False, reason, message, now, generation)
        status.observed_generation = generation
        await self._write_status(kind, body, status.to_wire())
        if not already or changed:  # each resync re-decides the same: say it once, not every minute
            await self._event(body, "Warning", reason, message)
        self._count_phase(kind, body, Phase.FAILED)

    def reconcile_due_in(self, kind_name: str, namespace: str, name: str) -> float | None:
        """Seconds until the resource's next full reconcile (None: none scheduled, e.g. not seen yet)."""
        due = self._reconcile_at.get((kind_name, namespace, name))
        return None if due is None else due - time.monotonic()

    def forget(self, kind: Kind, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (kind.name, meta["namespace"], meta["name"])
        self._locks.pop(key, None)
        self._phases.pop(key, None)
        self._written_status.pop(key, None)
        self._written_finalizers.pop(key, None)
        self._progress.pop(key, None)
        self._job_events.pop(key, None)
        self._reconcile_at.pop(key, None)
        self._poll_at.pop(key, None)
        self._failures.pop(key, None)
        if (pending := self._requeues.pop(key, None)) is not None:
            pending.cancel()
        if self._metric_reads is not None:
            self._metric_reads.forget(meta["namespace"], meta["name"])
        if kind.model is Deployment:
            with contextlib.suppress(KeyError):  # never reconciled by this replica
                self.metrics.canary_weight.remove(meta["namespace"], meta["name"])
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

    def child_index(namespace: str, labels: dict[str, str], body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, labels[LABEL_KIND], labels[LABEL_NAME]): _snapshot(body)}

    for group, version, plural in owned(controller.settings):
        kopf.index(group, version, plural, labels=managed, id=f"owned_{plural}", registry=registry)(child_index)

    def resource_index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): _snapshot(body)}

    for kind in KINDS:
        kopf.index(GROUP, VERSION, kind.plural, id=_index_id(kind), registry=registry)(resource_index)
        kopf.index(GROUP, VERSION, kind.plural, id=_reverse_index_id(kind), registry=registry)(_reference_index(kind))
        _register_kind(registry, controller, kind, managed)


def _reference_index(kind: Kind) -> Callable[..., dict[Any, Any]]:
    """Index resources of `kind` by what they reference, so a referenced resource's event finds its dependents
    with one lookup instead of validating every resource of the namespace."""

    def index(namespace: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        try:
            refs = kind.references(kind.model.model_validate(body))
        except (ValidationError, ValueError):
            return {}
        return {(namespace, ref_kind, ref_name): _snapshot(body) for ref_kind, ref_name in refs}

    return index


def _reverse_index_id(kind: Kind) -> str:
    return f"{kind.plural}_by_reference"


def _index_id(kind: Kind) -> str:
    return f"{kind.plural}_by_name"


def _children_of(namespace: str, kind: Kind, name: str, indexes: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for index_id, index in indexes.items():
        if index_id.startswith("owned_"):  # every child kind registered (see owned())
            for child in index.get((namespace, kind.name, name), []):
                out.setdefault(child["kind"], []).append(child)
    return out


def _first(store: Any) -> Any:
    return next(iter(store), None) if store is not None else None


async def _reconcile_from_indexes(controller: Controller, kind: Kind, body: dict[str, Any],
                                  indexes: dict[str, Any]) -> None:
    """Observe the resource's children and the resources it references (from the indexes), then reconcile."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    controller.indexes = indexes
    by_kind = {k.name: k for k in KINDS}
    try:
        wanted = kind.references(kind.model.model_validate(body))
    except (ValidationError, ValueError):
        wanted = []  # the reconcile reports the invalid spec
    refs = {(ref_kind, ref_name): _first(indexes[_index_id(by_kind[ref_kind])].get((namespace, ref_name)))
            for ref_kind, ref_name in wanted if ref_kind in by_kind}
    children = await controller.with_job_events((kind.name, namespace, name),
                                                _children_of(namespace, kind, name, indexes))
    await controller.reconcile(kind, body, children, refs)


async def _reconcile_dependents(controller: Controller, changed: Kind, namespace: str, name: str,
                                indexes: dict[str, Any]) -> None:
    """Re-reconcile every resource that references the one that changed (e.g. PretrainJobs of a Dataset)."""
    for kind in KINDS:
        for body in indexes[_reverse_index_id(kind)].get((namespace, changed.name, name), []):
            await _reconcile_from_indexes(controller, kind, body, indexes)


def _register_kind(registry: kopf.OperatorRegistry, controller: Controller, kind: Kind,
                   managed: dict[str, str]) -> None:
    async def on_event(type: str, body: kopf.Body, namespace: str, name: str, **indexes: Any) -> None:
        meta = body.get("metadata", {})
        # A deleting resource is still reconciled while it holds our finalizer: its artifacts must go first.
        if type == "DELETED" or (meta.get("deletionTimestamp")
                                 and artifacts.FINALIZER not in (meta.get("finalizers") or [])):
            controller.forget(kind, dict(body))
        else:
            await _reconcile_from_indexes(controller, kind, _snapshot(body), indexes)
        await _reconcile_dependents(controller, kind, namespace, name, indexes)

    async def on_child_event(namespace: str, labels: dict[str, str], **indexes: Any) -> None:
        for owner in indexes[_index_id(kind)].get((namespace, labels[LABEL_NAME]), []):
            await _reconcile_from_indexes(controller, kind, owner, indexes)

    kopf.on.event(GROUP, VERSION, kind.plural, id=f"{kind.plural}-event", registry=registry)(on_event)
    for group, version, plural in owned(controller.settings):
        kopf.on.event(group, version, plural, labels={**managed, LABEL_KIND: kind.name},
                      id=f"{kind.plural}-{plural}-event", registry=registry)(on_child_event)


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"
