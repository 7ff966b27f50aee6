"""`llmops run -f FILE_OR_DIR...`: the manifests a cluster would run, run on this machine.

Like a controller: each resource, in the order its references give, is decided by the same pure code the
operator runs (`workload.decide`, the Deployment's gate), its plan run by the local backend, its status saved
as `.status` would be in a cluster. A resource whose spec and inputs are unchanged since it succeeded is left
alone (`--force NAME` runs it again). Ctrl-C stops the running workload with SIGTERM, as a pod is stopped: it
checkpoints, and the next run resumes from there.
"""

from __future__ import annotations

import functools
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from llmops.operator.api.v1alpha1.common import Phase
from llmops.operator.backends.local import LocalBackend
from llmops.operator.reconcile import dataset, evaluation, finetune, pretrainjob
from llmops.operator.reconcile.plan import Waiting
from llmops.operator.reconcile.progress import parse_progress, with_progress
from llmops.operator.reconcile.workload import WorkloadKind, decide
from llmops.operator.settings import OperatorSettings
from llmops.trainer.config.layout import checkpoints_uri, is_local, local_path

from .graph import ordered, upstream
from .manifests import Loaded, ManifestError, load, uri_fields
from .store import INPUT_DIGEST, MANIFEST, OUTPUT_DIGEST, Store, content_digest, spec_digest

KINDS: dict[str, WorkloadKind] = {"Dataset": dataset, "PretrainJob": pretrainjob, "FineTune": finetune,
                                  "Evaluation": evaluation}  # type: ignore[dict-item]
POLL_SECONDS = 0.5
INTERRUPTED_EXIT_CODE = 130


class Outcome(StrEnum):
    UNCHANGED = "unchanged"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass
class RunOptions:
    paths: list[Path]
    store: Path
    dry_run: bool = False
    force: set[str] = field(default_factory=set)
    serve: bool = False
    prompt: str | None = None
    cores: int | None = None
    artifact_root: str | None = None
    """Where outputs go when a spec names none (a folder or an fsspec URI); default: the store's artifacts/."""


def settings_for(store: Store, artifact_root: str | None = None) -> OperatorSettings:
    """The operator's settings, with the store's artifact folder (or the root given) as the artifact root."""
    return OperatorSettings(artifact_root=artifact_root or str(store.artifacts.resolve()))


class Runner:
    def __init__(self, options: RunOptions, display: Any, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.options = options
        self.store = Store(options.store)
        self.settings = settings_for(self.store, options.artifact_root)
        self.backend = LocalBackend(self.store.root, options.cores)
        self.display = display
        self.clock = clock
        self.interrupted = False
        self.bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self.shown: list[tuple[str, str]] = []
        """The resources this run has reached, in order (the display shows only these)."""

    # -- what each resource is now -------------------------------------------------------------------------

    def input_digest(self, item: Loaded, items: list[Loaded]) -> str:
        """Spec, plus the content of everything the resource reads: its upstream resources' artifacts (their
        output digests) and the local files its spec names."""
        inputs = {f"{u.resource.kind}/{u.resource.metadata.name}":
                  ((self.bodies.get(u.key) or {}).get("metadata", {}).get("annotations", {}).get(OUTPUT_DIGEST, ""))
                  for u in upstream(item, items)}
        spec = item.resource.spec.to_wire()
        for uri in (holder[key] for _, holder, key in uri_fields(spec)):
            if is_local(uri) and not uri.startswith(str(self.store.root.resolve())):
                inputs[uri] = content_digest(local_path(uri))
        return spec_digest(spec, inputs)

    def body(self, item: Loaded, digest: str) -> tuple[dict[str, Any], bool]:
        """The resource as the store knows it, with this spec; and whether it is unchanged since it succeeded."""
        resource = item.resource
        saved = self.store.load(resource.kind, resource.metadata.name) or {}
        meta = saved.get("metadata") or {}
        same = (meta.get("annotations") or {}).get(INPUT_DIGEST) == digest
        forced = resource.metadata.name in self.options.force or item.title in self.options.force
        generation = (meta.get("generation") or 0) + (0 if same and not forced and meta else 1)
        status = saved.get("status") or None
        body = {"apiVersion": resource.api_version, "kind": resource.kind,
                "metadata": {"name": resource.metadata.name, "namespace": resource.metadata.namespace,
                             "generation": generation, "uid": f"local-{resource.kind.lower()}-{resource.metadata.name}",
                             "creationTimestamp": meta.get("creationTimestamp") or _wire_time(self.clock()),
                             "annotations": {**(meta.get("annotations") or {}), INPUT_DIGEST: digest,
                                             MANIFEST: str(item.file)}},
                "spec": resource.spec.to_wire(), "status": status}
        succeeded = (status or {}).get("phase") == Phase.SUCCEEDED and same and not forced
        return body, succeeded and self._artifact_exists(status or {})

    def _artifact_exists(self, status: dict[str, Any]) -> bool:
        uri = status.get("artifactUri")
        return uri is None or not is_local(uri) or local_path(uri).exists()

    def refs(self) -> dict[tuple[str, str], Any]:
        return dict(self.bodies)

    # -- running -----------------------------------------------------------------------------------------------

    def execute(self) -> int:
        try:
            items = ordered(load(self.options.paths))
        except ManifestError as error:
            self.display.log(f"llmops run: nothing was run:\n{error}")
            return 1
        for item in items:  # what earlier runs left: upstream output digests, statuses
            if saved := self.store.load(*item.key):
                self.bodies[item.key] = saved
        if self.options.dry_run:
            return self.dry_run(items)
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            return self._run_all(items)
        finally:
            signal.signal(signal.SIGINT, previous)
            self.backend.stop()

    def _on_interrupt(self, *_: Any) -> None:
        if not self.interrupted:
            self.display.log("llmops run: stopping (the running workload checkpoints first; Ctrl-C again to force)")
            self.interrupted = True
        else:
            self.backend.force()

    def _run_all(self, items: list[Loaded]) -> int:
        for item in items:
            if self.interrupted:
                return INTERRUPTED_EXIT_CODE
            if item.resource.kind == "Deployment":
                from .serve import serve

                code = serve(self, item)
                if code:
                    return code
                continue
            outcome = self.run_workload(item, items)
            if outcome is Outcome.INTERRUPTED:
                return INTERRUPTED_EXIT_CODE
            if outcome is Outcome.FAILED:
                self.display.log(f"llmops run: {item.title} failed; what depends on it was not run "
                                 f"(llmops describe {item.title})")
                return 1
        return 0

    def run_workload(self, item: Loaded, items: list[Loaded]) -> Outcome:
        kind = KINDS[item.resource.kind]
        digest = self.input_digest(item, items)
        body, unchanged = self.body(item, digest)
        if unchanged:
            self.display.log(f"{item.title}: unchanged (spec and inputs as when it succeeded)")
            self._save(item, body, [], self.clock())
            return Outcome.UNCHANGED
        if body["metadata"]["generation"] != (self.bodies.get(item.key) or {}).get("metadata", {}).get("generation"):
            self._set_aside_checkpoints(item, body)
        stopped = False
        observe = functools.partial(self.backend.observe, item.resource.kind, item.resource.metadata.name)
        while True:
            resource = type(item.resource).model_validate(body)
            now = self.clock()
            plan, status, events = decide(kind, resource, observe, self.refs(), self.settings, now)
            if plan is not None and (run := self.backend.run_of(plan.run)) is not None:
                status = with_progress(status, parse_progress(run.log_tail(), resource.kind, plan.run))
            body = {**body, "status": status}
            self._save(item, body, events, now)
            phase = status.get("phase")
            if phase == Phase.SUCCEEDED:
                self._finish(item, body)
                return Outcome.SUCCEEDED
            if phase == Phase.FAILED or plan is None:
                return Outcome.FAILED
            if stopped:
                return Outcome.INTERRUPTED
            if self.interrupted:  # stop the workload, then read its state once more (it may have finished)
                self.backend.stop()
                stopped = True
                continue
            time.sleep(POLL_SECONDS)

    def _finish(self, item: Loaded, body: dict[str, Any]) -> None:
        uri = body["status"].get("artifactUri")
        local = uri is not None and is_local(uri)
        body["metadata"]["annotations"][OUTPUT_DIGEST] = (
            content_digest(local_path(uri)) if local and uri else body["metadata"]["annotations"]
            [INPUT_DIGEST])
        self._save(item, body, [], self.clock())

    def _set_aside_checkpoints(self, item: Loaded, body: dict[str, Any]) -> None:
        """A new run (changed inputs, or --force) starts from scratch, not from an earlier run's checkpoints:
        those move to `checkpoints.previous-<generation>` in the same output folder (kept, not deleted)."""
        kind = KINDS[item.resource.kind]
        planned = kind.plan(type(item.resource).model_validate(body), self.refs(), self.settings)
        if isinstance(planned, Waiting) or not is_local(planned.writes):
            return
        checkpoints = Path(checkpoints_uri(planned.writes))
        if checkpoints.is_dir() and any(checkpoints.iterdir()):
            aside = checkpoints.with_name(f"checkpoints.previous-{body['metadata']['generation'] - 1}")
            shutil.rmtree(aside, ignore_errors=True)
            checkpoints.rename(aside)
            self.display.log(f"{item.title}: a new run; the earlier run's checkpoints are kept in {aside}")

    def _save(self, item: Loaded, body: dict[str, Any], events: list[Any], now: datetime) -> None:
        self.bodies[item.key] = body
        if item.key not in self.shown:
            self.shown.append(item.key)
        self.store.save(body)
        self.store.record(item.resource.kind, item.resource.metadata.name, events, now)
        for event in events:
            self.display.log(f"{item.title}: {event.reason}: {event.message}")
        self._show()

    def _show(self) -> None:
        self.display.update([self.bodies[key] for key in self.shown])

    # -- --dry-run -----------------------------------------------------------------------------------------

    def dry_run(self, items: list[Loaded]) -> int:
        """Each resource in order: what it waits for, and whether it would run or is unchanged. Runs nothing."""
        self.display.log(f"llmops run --dry-run: {len(items)} resources, in this order (nothing is run):")
        for index, item in enumerate(items, 1):
            waits = ", ".join(u.title for u in upstream(item, items)) or "nothing"
            if item.resource.kind == "Deployment":
                what = "check its gate, then serve the model on 127.0.0.1"
            else:
                digest = self.input_digest(item, items)
                _, unchanged = self.body(item, digest)
                upstream_runs = any(not self._would_skip(u, items) for u in upstream(item, items))
                what = "unchanged (skipped)" if unchanged and not upstream_runs else "would run"
                if what == "would run":
                    what += f": {self._describe_plan(item)}"
            self.display.log(f"{index}. {item.title} (from {item.file}) waits for {waits}; {what}")
        return 0

    def _would_skip(self, item: Loaded, items: list[Loaded]) -> bool:
        if item.resource.kind == "Deployment":
            return False
        _, unchanged = self.body(item, self.input_digest(item, items))
        return unchanged and all(self._would_skip(u, items) for u in upstream(item, items))

    def _describe_plan(self, item: Loaded) -> str:
        """The command it would run, once what it references exists (entrypoint and launcher)."""
        planned = KINDS[item.resource.kind].plan(item.resource, self.refs(), self.settings)
        if isinstance(planned, Waiting):
            return f"{KINDS[item.resource.kind].ENTRYPOINT} once {planned.what} has succeeded"
        return f"{planned.launcher.value} {planned.role.entrypoint}, writing {planned.writes}"


def _wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
