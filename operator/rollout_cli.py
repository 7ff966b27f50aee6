"""`llmops rollout status|promote|abort|retry|undo NAME`: follow and steer the rollout of an llmops.dev Deployment.

The operator never writes `.spec`, so the commands ask for an action by setting one annotation (see
api/v1alpha1/rollout_commands.py) with a JSON merge patch of metadata only; the operator acts on it once. Each
command reads the status first and refuses, saying why and what would work, when it makes no sense now.

Pure parts (unit-tested): `plan` (which annotation a command sets, or why not), `render_status` (the terminal
view of a status) and `watch_result` (when `status --watch` is done). The rest is thin I/O with the `kubernetes`
client, imported only when a command talks to a cluster.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmops.operator.api.v1alpha1 import rollout_commands as commands
from llmops.operator.api.v1alpha1.common import GROUP, VERSION, Condition, seconds
from llmops.operator.api.v1alpha1.deployment import (
    AnalysisCheck,
    CanaryStatus,
    DeploymentPhase,
    DeploymentStatus,
    Outcome,
    Revision,
)

PLURAL = "deployments"
RESOURCE = f"{PLURAL}.{GROUP}"
FIELD_MANAGER = "llmops-cli"
"""The field manager of the annotations the commands set (visible in metadata.managedFields)."""

EXIT_DONE, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2
"""`status --watch`: Available with no canary; Degraded or Failed; --timeout passed first."""

CONDITION_ORDER = ("Ready", "Gated", "Progressing", "Degraded")
RETRYABLE = (Outcome.ROLLED_BACK, Outcome.ABORTED, Outcome.FAILED)
CONFLICT_RETRIES = 5
"""A command is decided on the status it read; if the object changed before the patch landed, read and decide again."""
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class RolloutError(Exception):
    """A command that cannot run now; the message says why and what would work."""


# --- Which annotation a command sets (pure) ---------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One command to send: set annotation `key` to `value`."""

    key: str
    value: str
    summary: str
    """What was asked, in words, e.g. "promote revision 2 (skip the remaining steps)"."""


def parse_status(obj: Mapping[str, Any]) -> DeploymentStatus:
    """The typed status of a Deployment object (an empty one while the operator has written none)."""
    try:
        return DeploymentStatus.model_validate(obj.get("status") or {})
    except ValidationError as error:
        raise RolloutError(f"the status of {_name(obj)} does not match this llmops version's API (a newer "
                           f"operator?); upgrade llmops, or read it raw with `-o json`: {error}") from error


def plan(command: str, obj: Mapping[str, Any], token: str, to_revision: int | None = None) -> Request:
    """The annotation `command` (promote, abort, retry or undo) sets on `obj`, or RolloutError saying why not."""
    status = parse_status(obj)
    name = _name(obj)
    if command == "promote":
        return _promote(name, status, token)
    if command == "abort":
        return _abort(name, status, token)
    if command == "retry":
        return _retry(name, status, _generation(obj), token)
    if command == "undo":
        target = undo_target(name, status, to_revision)
        return Request(commands.UNDO, commands.command_value(token, revision=target.revision),
                       f"undo to revision {target.revision} ({target.model_uri}); it is served instead of spec.model "
                       "until the spec changes")
    raise ValueError(f"unknown rollout command {command!r}")


def _promote(name: str, status: DeploymentStatus, token: str) -> Request:
    canary = _require_canary(name, status, "promote")
    if canary.promoted_at is not None:
        raise RolloutError(f"revision {canary.revision} of {name} is promoted already (post-promotion analysis runs "
                           f"until revision {canary.previous_revision} scales down); nothing to promote. "
                           f"`llmops rollout abort {name}` would roll it back")
    held = f", resuming it from {canary.paused_reason}" if canary.paused_reason else ""
    return Request(commands.PROMOTE, commands.command_value(token),
                   f"promote revision {canary.revision} (skip its remaining steps{held})")


def _abort(name: str, status: DeploymentStatus, token: str) -> Request:
    canary = _require_canary(name, status, "abort")
    back = (f"back to revision {canary.previous_revision}" if canary.previous_revision is not None
            else "with no earlier revision to go back to: nothing serves afterwards")
    return Request(commands.ABORT, commands.command_value(token),
                   f"abort revision {canary.revision} (roll it {back}; not retried until the spec changes or "
                   "`llmops rollout retry`)")


def _require_canary(name: str, status: DeploymentStatus, command: str) -> CanaryStatus:
    if status.canary is not None:
        return status.canary
    serving = (f"revision {status.current_revision} serves all traffic" if status.current_revision is not None
               else "nothing serves yet")
    hint = f"; `llmops rollout retry {name}` rolls a failed one out again" if _retryable_hint(status) else ""
    raise RolloutError(f"{name} has no canary to {command}: {serving} (phase {_phase(status)}){hint}")


def _retryable_hint(status: DeploymentStatus) -> bool:
    return any(r.outcome in RETRYABLE for r in status.history)


def _retry(name: str, status: DeploymentStatus, generation: int | None, token: str) -> Request:
    if status.canary is not None:
        raise RolloutError(f"revision {status.canary.revision} of {name} is rolling out now; nothing to retry "
                           f"(`llmops rollout promote {name}` or `llmops rollout abort {name}` steer it)")
    ended = [r for r in status.history if r.outcome in RETRYABLE]
    current = [r for r in ended if generation is None or r.generation == generation]
    if current:
        entry = max(current, key=lambda r: r.revision)
        return Request(commands.RETRY, commands.command_value(token),
                       f"retry revision {entry.revision} ({entry.outcome.value}: {entry.reason or 'no reason given'})")
    gated = [r for r in status.history if r.outcome is Outcome.GATED and r.generation == generation]
    if gated:
        entry = gated[-1]
        raise RolloutError(f"revision {entry.revision} of {name} was Gated: its Evaluation did not pass "
                           f"({entry.reason or 'no reason given'}); retry does not skip the gate: fix or rerun the "
                           f"Evaluation {entry.evaluation}, and the operator rolls it out by itself once it passes")
    older = (f" (revision {ended[-1].revision} was {ended[-1].outcome.value} at generation {ended[-1].generation}; "
             "the spec changed since, so the operator decides again by itself)") if ended else ""
    raise RolloutError(f"{name} has nothing to retry: no revision was RolledBack, Aborted or Failed at generation "
                       f"{generation}{older}")


def undo_target(name: str, status: DeploymentStatus, to_revision: int | None = None) -> Revision:
    """The revision `undo` serves: `to_revision`, or by default the one that served before the current stable.

    The default is the Superseded revision that took all traffic last (as `kubectl rollout undo` goes back to the
    previous revision); RolloutError when there is none, or when `to_revision` cannot be served again.
    """
    stable = status.current_revision
    kept = ", ".join(str(r.revision) for r in status.history) or "none"
    if to_revision is None:
        earlier = [r for r in status.history if r.outcome is Outcome.SUPERSEDED and r.deployed_at is not None
                   and r.revision != stable]
        if not earlier:
            raise RolloutError(f"{name} has no earlier revision to undo to: status.history holds no Superseded "
                               f"revision that served before the stable revision {stable} (revisions kept: {kept}); "
                               "name one with --to-revision N")
        return max(earlier, key=lambda r: (r.deployed_at, r.revision))
    entry = next((r for r in status.history if r.revision == to_revision), None)
    if entry is None:
        raise RolloutError(f"revision {to_revision} is not in the history of {name} (revisions kept: {kept}; "
                           "spec.revisionHistoryLimit sets how many old ones are kept)")
    if entry.revision == stable:
        raise RolloutError(f"revision {to_revision} is the stable revision of {name} already: nothing to undo")
    if status.canary is not None and status.canary.revision == to_revision:
        raise RolloutError(f"revision {to_revision} of {name} is rolling out now; `llmops rollout promote {name}` "
                           "would finish it")
    if entry.outcome is Outcome.GATED:
        raise RolloutError(f"revision {to_revision} of {name} never passed its gate (Gated: "
                           f"{entry.reason or 'its Evaluation did not pass'}); undo serves only revisions whose "
                           "Evaluation passed")
    return entry


# --- When `status --watch` is done (pure) ------------------------------------------------------------------

def watch_result(obj: Mapping[str, Any]) -> int | None:
    """EXIT_DONE once Available with no canary, EXIT_FAILED once Degraded or Failed, None while it moves.

    Only a status that reflects the object's current generation counts: right after a spec change the old
    status says nothing about the new revision.
    """
    status = parse_status(obj)
    generation = _generation(obj)
    if generation is not None and status.observed_generation != generation:
        return None
    if status.phase is DeploymentPhase.AVAILABLE and status.canary is None:
        return EXIT_DONE
    if status.phase in (DeploymentPhase.DEGRADED, DeploymentPhase.FAILED):
        return EXIT_FAILED
    return None


# --- The terminal view of a status (pure) ------------------------------------------------------------------

def render_status(status: Mapping[str, Any] | DeploymentStatus, *, title: str = "",
                  generation: int | None = None, steps: int | None = None) -> str:
    """The status as a person reads it: phase, revisions, canary, conditions, last check, history.

    `generation` (metadata.generation) adds a note when the status lags behind the spec; `steps` (the number
    of spec.canary.steps) shows the canary's step as "2 of 3".
    """
    if not isinstance(status, DeploymentStatus):
        status = DeploymentStatus.model_validate(status)
    lines = [title] if title else []
    if status.phase is None and not status.conditions and not status.history:
        lines.append("no status yet: the operator has not reconciled this Deployment (is it running?)")
        return "\n".join(lines) + "\n"
    lines += _fields([
        ("Phase", _phase(status)),
        ("Stable", f"revision {status.current_revision}" if status.current_revision is not None else "none"),
        ("Canary", _canary_line(status.canary, steps) if status.canary else "none"),
    ])
    if status.canary is not None:
        lines += _canary_details(status.canary)
    lines += _fields([
        ("Pinned", f"revision {status.pinned_revision} (`llmops rollout undo`, until the spec changes)"
         if status.pinned_revision is not None else None),
        ("Replicas", f"{status.ready_replicas} ready of {status.replicas}"),
        ("URL", status.url),
        ("Traffic", status.traffic),
    ])
    if generation is not None and status.observed_generation is not None and status.observed_generation < generation:
        lines.append(f"Note:      this status is of generation {status.observed_generation}; the operator has not "
                     f"acted on generation {generation} yet")
    if status.conditions:
        lines += ["", "Conditions:", *_indent(_table(["TYPE", "STATUS", "REASON", "MESSAGE"],
                                                     [[c.type, c.status.value, c.reason, c.message]
                                                      for c in _ordered(status.conditions)]))]
    if status.canary is not None and status.canary.last_check is not None:
        lines += ["", *_check_lines(status.canary.last_check)]
    if status.history:
        lines += ["", "History:", *_indent(_table(
            ["REVISION", "MODEL URI", "EVALUATION", "OUTCOME", "DEPLOYED AT", "REASON"],
            [[str(r.revision), r.model_uri, r.evaluation, r.outcome.value, _time(r.deployed_at), r.reason or ""]
             for r in sorted(status.history, key=lambda r: r.revision)]))]
    return "\n".join(lines) + "\n"


def _canary_line(canary: CanaryStatus, steps: int | None) -> str:
    step = f"step {canary.step + 1}" + (f" of {steps}" if steps else "")
    if steps is not None and canary.step >= steps:
        step = "all steps done"
    weight = f"weight {canary.weight}%"
    extra = []
    if canary.desired_weight != canary.weight:
        extra.append(f"desired {canary.desired_weight}%")
    if canary.effective_weight is not None:
        extra.append(f"effective {canary.effective_weight}%")
    if extra:
        weight += f" ({', '.join(extra)})"
    return f"revision {canary.revision}, {step}, {weight}"


def _canary_details(canary: CanaryStatus) -> list[str]:
    details = _fields([
        ("Previous", f"revision {canary.previous_revision} (rolled back to on failure)"
         if canary.previous_revision is not None else None),
        ("Paused", f"{canary.paused_reason} (`llmops rollout promote` resumes, `abort` rolls back)"
         if canary.paused_reason else None),
        ("Promoted", f"{_time(canary.promoted_at)} (post-promotion analysis until the old stable scales down)"
         if canary.promoted_at else None),
        ("Checks", f"{canary.failed_checks} failed, {canary.inconclusive_checks} inconclusive"
         + (f"; next at {_time(canary.next_check_at)}" if canary.next_check_at else "")
         if canary.last_check or canary.failed_checks or canary.inconclusive_checks else None),
    ])
    return details


def _check_lines(check: AnalysisCheck) -> list[str]:
    stable = f" (stable {check.stable_requests})" if check.stable_requests is not None else ""
    head = (f"Last analysis check: {check.verdict.value} at {_time(check.time)}, {check.requests} canary "
            f"requests{stable}, from {check.source}")
    rows = [[m.metric, _number(m.value), _number(m.stable), _number(m.threshold),
             "-" if m.passed is None else ("yes" if m.passed else "no")] for m in check.metrics]
    out = [head]
    if rows:
        out += _indent(_table(["METRIC", "CANARY", "STABLE", "THRESHOLD", "PASSED"], rows))
    if check.message:
        out.append(f"  {check.message}")
    return out


def _ordered(conditions: Iterable[Condition]) -> list[Condition]:
    rank = {t: i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(conditions, key=lambda c: rank.get(c.type, len(rank)))


def _fields(pairs: Sequence[tuple[str, str | None]]) -> list[str]:
    return [f"{label + ':':<10} {value}" for label, value in pairs if value is not None]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in (header, *rows)]


def _indent(lines: Iterable[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return (value.astimezone(UTC) if value.tzinfo else value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _phase(status: DeploymentStatus) -> str:
    return status.phase.value if status.phase else "unknown"


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", "?"))


def _generation(obj: Mapping[str, Any]) -> int | None:
    return obj.get("metadata", {}).get("generation")


def _steps(obj: Mapping[str, Any]) -> int | None:
    canary = (obj.get("spec") or {}).get("canary") or {}
    return len(canary["steps"]) if canary.get("steps") else None


def render(obj: Mapping[str, Any]) -> str:
    """`render_status` of a whole Deployment object, titled with its name and namespace."""
    meta = obj.get("metadata", {})
    return render_status(parse_status(obj), title=f"Deployment {meta.get('name')} (namespace "
                         f"{meta.get('namespace')}, generation {meta.get('generation')})",
                         generation=_generation(obj), steps=_steps(obj))


# --- Arguments ---------------------------------------------------------------------------------------------

def duration(text: str) -> float:
    """An argparse type: seconds from "90", "30s", "5m" or "1h30m" (0: no limit)."""
    try:
        value = float(text)
    except ValueError:
        try:
            return seconds(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a duration such as 30s, 5m or 1h (0: no limit), "
                                             f"got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"a duration is a finite number of seconds from 0, got {text!r}")
    return value


def revision_number(text: str) -> int:
    """An argparse type: a revision number from status.history (1, 2, ...)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"revisions are numbered 1, 2, ... as `llmops rollout status` lists "
                                         f"them, got {text!r}")
    return int(text)


def add_parser(commands_: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `llmops rollout ...` on the top-level sub-command parser."""
    rollout = commands_.add_parser("rollout", help="follow and steer the rollout of an llmops.dev Deployment",
                                   description="Follow and steer the canary rollout of an llmops.dev Deployment. "
                                   "Commands set an annotation (never the spec); the operator acts on it once.")
    sub = rollout.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")

    def common(name: str, help_: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_, description=help_)
        parser.add_argument("name", metavar="NAME", help="the Deployment (deployments.llmops.dev)")
        parser.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's)")
        parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the "
                            "in-cluster service account)")
        parser.add_argument("--context", help="kubeconfig context (default: the current one)")
        parser.set_defaults(func=run)
        return parser

    status = common("status", "show the rollout: phase, revisions, canary, conditions, last check, history")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text", help="json: the raw status")
    status.add_argument("-w", "--watch", action="store_true",
                        help="re-print on change; exit 0 once Available with no canary, 1 once Degraded or Failed, "
                        "2 on --timeout")
    status.add_argument("--timeout", type=duration, default=None,
                        help="with --watch: give up after this long, e.g. 30s or 10m (default 0: no limit)")
    common("promote", "promote the current canary now: skip its remaining steps (also resumes a paused one)")
    common("abort", "roll the current canary back now (not retried until the spec changes)")
    common("retry", "roll out again the revision that was rolled back, aborted or failed at this spec")
    undo = common("undo", "serve an earlier revision from status.history until the spec changes")
    undo.add_argument("--to-revision", type=revision_number, default=None, metavar="N",
                      help="the revision to serve (default: the one that served before the current stable)")


# --- I/O ---------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    if args.rollout_command == "status" and args.timeout is not None and not args.watch:
        print("llmops rollout status: --timeout needs --watch", file=sys.stderr)
        return 2
    try:
        cluster = Cluster.connect(args.kubeconfig, args.context, args.namespace)
        if args.rollout_command == "status":
            return _status(cluster, args.name, args.output, args.watch, args.timeout or 0)
        return _command(cluster, args.name, args.rollout_command, getattr(args, "to_revision", None))
    except RolloutError as error:
        print(f"llmops rollout {args.rollout_command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _status(cluster: Cluster, name: str, output: str, watch: bool, timeout: float) -> int:
    def show(obj: Mapping[str, Any]) -> str:
        return json.dumps(obj.get("status") or {}, indent=2) + "\n" if output == "json" else render(obj)

    if not watch:
        sys.stdout.write(show(cluster.get(name)))
        return EXIT_DONE
    shown: list[str] = []
    last: list[Mapping[str, Any]] = []

    def on_change(obj: Mapping[str, Any]) -> int | None:
        text = show(obj)
        if not shown or text != shown[-1]:
            sys.stdout.write(("\n" if shown else "") + text)
            sys.stdout.flush()
            shown.append(text)
        last[:] = [obj]
        return watch_result(obj)

    code = cluster.watch(name, on_change, timeout)
    phase = _phase(parse_status(last[-1]))
    if code is None:
        print(f"llmops rollout status: timed out after {timeout:g}s waiting for {name} (phase {phase}) to be "
              "Available with no canary, or Degraded", file=sys.stderr)
        return EXIT_TIMEOUT
    if code == EXIT_FAILED:
        print(f"llmops rollout status: {name} is {phase}", file=sys.stderr)
    return code


def _command(cluster: Cluster, name: str, command: str, to_revision: int | None) -> int:
    for _ in range(CONFLICT_RETRIES):
        obj = cluster.get(name)
        request = plan(command, obj, commands.new_token(datetime.now(UTC)), to_revision)
        if cluster.annotate(name, request.key, request.value, obj["metadata"]["resourceVersion"]):
            print(f"deployments.llmops.dev/{name}: asked to {request.summary}")
            print(f"  {request.key}: {request.value}")
            print(f"  follow it with `llmops rollout status {name} -n {cluster.namespace} --watch`")
            return 0
    raise RolloutError(f"{name} kept changing while the command was sent ({CONFLICT_RETRIES} tries); run it again")


@dataclass
class Cluster:
    """The Deployment API of one cluster and namespace (the kubernetes client, loaded as kubectl would)."""

    api: Any
    namespace: str

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if kubeconfig or context or os.environ.get("KUBECONFIG") or Path(
                    config.KUBE_CONFIG_DEFAULT_LOCATION).expanduser().exists():
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
                namespace = namespace or _context_namespace(kubeconfig, context)
            else:
                config.load_incluster_config(client_configuration=configuration)
                namespace = namespace or _incluster_namespace()
        except (config.ConfigException, OSError) as error:
            raise RolloutError(f"cannot load a kubeconfig ({error}); pass --kubeconfig PATH or set KUBECONFIG, or "
                               "run inside a cluster with a service account") from error
        return cls(client.CustomObjectsApi(client.ApiClient(configuration)), namespace or "default")

    def get(self, name: str) -> dict[str, Any]:
        return self._call(name, lambda: self.api.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name))

    def annotate(self, name: str, key: str, value: str, resource_version: str) -> bool:
        """Merge-patch one annotation (metadata only) if the object is still at `resource_version`.

        False when it changed meanwhile (HTTP 409): the caller reads it again and decides again.
        """
        from kubernetes.client import ApiException

        body = {"metadata": {"resourceVersion": resource_version, "annotations": {key: value}}}
        try:
            self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body,
                                                    field_manager=FIELD_MANAGER,
                                                    _content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status == 409:
                return False
            raise self._error(name, error) from error
        return True

    def watch(self, name: str, on_change: Callable[[Mapping[str, Any]], int | None], timeout: float) -> int | None:
        """Call `on_change` with the object now and at every change until it returns a code, or None on timeout."""
        from kubernetes import watch
        from kubernetes.client import ApiException

        deadline = time.monotonic() + timeout if timeout else None
        while True:
            obj = self.get(name)
            if (code := on_change(obj)) is not None:
                return code
            left = deadline - time.monotonic() if deadline is not None else 60.0
            if left <= 0:
                return None
            stream = watch.Watch()
            try:
                for event in stream.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                           PLURAL, field_selector=f"metadata.name={name}",
                                           resource_version=obj["metadata"]["resourceVersion"],
                                           timeout_seconds=max(1, min(60, int(left + 0.999))),
                                           _request_timeout=left + 10):
                    if event["type"] == "DELETED":
                        raise RolloutError(f"{name} was deleted while watching it")
                    if (code := on_change(event["raw_object"])) is not None:
                        return code
                    if deadline is not None and time.monotonic() >= deadline:
                        return None
            except ApiException as error:
                if error.status != 410:  # 410 Gone: the watch expired; read the object again and watch on
                    raise self._error(name, error) from error
            finally:
                stream.stop()

    def _call(self, name: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as error:
            raise self._error(name, error) from error
        except HTTPError as error:
            raise RolloutError(f"cannot reach the API server: {error}") from error

    def _error(self, name: str, error: Any) -> RolloutError:
        if error.status == 404:
            if _names_the_object(error.body):
                return RolloutError(f'{RESOURCE} "{name}" not found in namespace "{self.namespace}" (`kubectl get '
                                    f'llmdeploy -n {self.namespace}` lists them; -n picks another namespace)')
            return RolloutError(f"the API server does not serve {RESOURCE}: install the llmops CRDs (the Helm chart "
                                "or `kubectl apply --server-side -f crds/`)")
        return RolloutError(f"the API server refused: {error.status} {error.reason}: {_message(error.body)}")


def _names_the_object(body: str | None) -> bool:
    """A 404 about the object carries a Status naming it; one from an unserved resource type does not."""
    try:
        return bool(json.loads(body or "").get("details", {}).get("name"))
    except (ValueError, AttributeError):
        return False


def _message(body: str | None) -> str:
    try:
        return str(json.loads(body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return (body or "").strip()[:500]


def _context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(kubeconfig)
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace")


def _incluster_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
