"""`llmops get|describe` for local mode: the store's resources shown the way kubectl shows them on a cluster.

The runner writes each resource as a cluster would return it (`<store>/resources/<kind>/<name>.yaml`) and its
events as JSON lines (`<store>/events/<kind>/<name>.jsonl`). Everything here only reads those files, so the
same views work while a run is in progress and after it ended. Columns come from the kinds' own printer
columns (the ones the CRDs publish), so `llmops get` locally and `kubectl get` on a cluster agree.

The small formatters (`age`, `duration`, `number`, `progress_text`) are shared with the live display.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from llmops.operator.api.v1alpha1 import GROUP, KINDS
from llmops.operator.api.v1alpha1.common import AGE_COLUMN, PHASE_COLUMN, PrinterColumn
from llmops.operator.reconcile.times import parse_time

LIFECYCLE: tuple[str, ...] = tuple(KINDS)
"""Kinds in the order a run goes through them: tables and listings follow it, so the output reads top-down."""

COLUMN_GAP = 3
"""Spaces between columns, as kubectl's tabwriter pads them."""

NONE = "<none>"


# --- Reading the store ------------------------------------------------------------------------------------

def load_resources(store: Path) -> list[dict[str, Any]]:
    """Every resource in the store, in lifecycle order (Dataset first), then by name.

    A file that is empty or not a mapping is skipped rather than fatal: a reader polling during a run may
    catch one the runner is still writing, and the next poll sees it whole.
    """
    resources = []
    for path in sorted((store / "resources").glob("*/*.yaml")):
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(document, dict) and document.get("kind"):
            resources.append(document)
    return sorted(resources, key=_lifecycle_key)


def load_events(store: Path, kind: str, name: str) -> list[dict[str, Any]]:
    """The events of one resource, oldest first (the order the runner appended them).

    A line that is not JSON (the last one, half-written while the runner appends) is skipped for the same
    reason as in `load_resources`.
    """
    path = store / "events" / _canonical(kind).lower() / f"{name}.jsonl"
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _lifecycle_key(resource: Mapping[str, Any]) -> tuple[int, str]:
    kind = resource.get("kind", "")
    return (LIFECYCLE.index(kind) if kind in LIFECYCLE else len(LIFECYCLE), name_of(resource))


# --- Kinds and names --------------------------------------------------------------------------------------

def kind_spellings(kind: str) -> tuple[str, ...]:
    """What a user may type for `kind` (lowercase): the kind, its plural and its short names, as with kubectl."""
    names = KINDS[kind].names
    return (kind.lower(), names.plural, *names.short_names)


def resolve_kind(text: str) -> str:
    """The kind (e.g. "PretrainJob") for any accepted spelling: kind, plural or short name, any case, with or
    without the `.llmops.dev` group suffix. Unknown spellings raise ValueError listing the accepted ones."""
    wanted = text.lower().removesuffix(f".{GROUP}")
    for kind in LIFECYCLE:
        if wanted in kind_spellings(kind):
            return kind
    accepted = "; ".join(f"{kind} ({', '.join(kind_spellings(kind))})" for kind in LIFECYCLE)
    raise ValueError(f"unknown kind {text!r}: use one of {accepted}")


def _canonical(text: str) -> str:
    """The kind for an accepted spelling, else `text` itself: events of a kind this version does not know
    are still found under its lowercased name."""
    try:
        return resolve_kind(text)
    except ValueError:
        return text


def name_of(resource: Mapping[str, Any]) -> str:
    return str((resource.get("metadata") or {}).get("name", ""))


def ref(resource: Mapping[str, Any]) -> str:
    """`Kind/name`: how the local views name a resource, since one run holds several kinds."""
    return f"{resource.get('kind', '?')}/{name_of(resource)}"


def find(resources: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """The one resource `name` means: `NAME`, or `KIND/NAME` with the kind in any accepted spelling.

    A bare name that several kinds share is refused rather than guessed (a PretrainJob and its Evaluation are
    often named alike); the error lists the candidates so the user can copy one.
    """
    kind, _, bare = name.rpartition("/")
    wanted = resolve_kind(kind) if kind else None
    matches = [r for r in resources if name_of(r) == bare and (wanted is None or r.get("kind") == wanted)]
    if len(matches) == 1:
        return dict(matches[0])
    if matches:
        raise ValueError(f"{name!r} is ambiguous: write KIND/NAME, one of {', '.join(ref(r) for r in matches)}")
    existing = ", ".join(ref(r) for r in resources) or "nothing yet"
    raise ValueError(f"no resource {name!r}; the store holds {existing}")


# --- Values -----------------------------------------------------------------------------------------------

def lookup(obj: Any, path: str) -> Any:
    """The value at a dot-only JSONPath such as `.status.metrics.loss`; None where any step is missing.

    The printer columns only use plain field paths, so this is all of JSONPath they need.
    """
    if not re.fullmatch(r"(\.[A-Za-z0-9_-]+)+", path):
        raise ValueError(f"unsupported JSONPath {path!r}: only .field.field paths are")
    for key in path.lstrip(".").split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def age(value: Any, now: datetime) -> str:
    """How long ago `value` (a timestamp) was, in kubectl's one-unit style: `45s`, `5m`, `3h`, `2d`.

    A value that is not a timestamp is shown as it is, so a surprise in the store stays visible.
    """
    moment = parse_time(value)
    if moment is None:
        return str(value)
    seconds = max(0, int((now - moment).total_seconds()))
    for limit, size, unit in ((120, 1, "s"), (3 * 3600, 60, "m"), (48 * 3600, 3600, "h"), (730 * 86400, 86400, "d")):
        if seconds < limit:
            return f"{seconds // size}{unit}"
    return f"{seconds // (365 * 86400)}y"


def duration(seconds: float) -> str:
    """A time left, precise enough to watch it move: `45s`, `1m05s`, `2h03m`."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def number(value: Any, digits: int = 4) -> str:
    """A metric as people read it: `digits` significant digits, whole numbers once they are that large
    (throughput in the thousands needs no exponent), integers and text unchanged."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or abs(value) < 10**digits:
        return f"{value:.{digits}g}"
    return f"{value:.0f}"


def progress_text(progress: Mapping[str, Any] | None) -> str:
    """`40/200 steps (20%)`, or `40 steps` when the total is unknown; empty without progress."""
    if not progress:
        return ""
    unit = progress.get("unit", "steps")
    done = progress.get("completed", 0)
    total = progress.get("total")
    text = f"{done}/{total} {unit}" if total is not None else f"{done} {unit}"
    return f"{text} ({progress['percent']})" if progress.get("percent") else text


def condition(resource: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The status condition of `type_` (e.g. Ready), if the resource has one."""
    for item in (resource.get("status") or {}).get("conditions") or ():
        if item.get("type") == type_:
            return item
    return None


def passed_text(passed: bool | None) -> str:
    """A metric result's outcome: passed, failed, or `-` where no threshold applied."""
    return "-" if passed is None else "passed" if passed else "failed"


# --- get --------------------------------------------------------------------------------------------------

def printer_columns(kind: str, *, wide: bool = False) -> tuple[PrinterColumn, ...]:
    """The kind's printer columns; priority > 0 only when `wide`, as `kubectl get -o wide` does.

    A kind this version does not know (a newer runner) still gets Phase and Age.
    """
    columns = KINDS[kind].names.printer_columns if kind in KINDS else (PHASE_COLUMN, AGE_COLUMN)
    return tuple(column for column in columns if wide or column.priority == 0)


def cell(resource: Mapping[str, Any], column: PrinterColumn, now: datetime) -> str:
    """One table cell: dates as ages, numbers legible, missing values blank (as kubectl prints them)."""
    value = lookup(resource, column.json_path)
    if value is None:
        return ""
    if column.type == "date":
        return age(value, now)
    if column.type == "number":
        return number(value)
    return number(value) if isinstance(value, bool) else str(value)


def align(rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Rows as left-aligned columns separated by COLUMN_GAP spaces, like kubectl's tabwriter."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    lines = []
    for row in rows:
        padded = "".join(text.ljust(width + COLUMN_GAP) for text, width in zip(row, widths, strict=True))
        lines.append((indent + padded).rstrip())
    return "\n".join(lines)


def kind_table(resources: Iterable[Mapping[str, Any]], kind: str, now: datetime, *, prefixed: bool = False,
               wide: bool = False) -> str:
    """The `kubectl get KIND` table of one kind; `prefixed` names rows `kind.llmops.dev/name`, as kubectl does
    when one listing shows several kinds."""
    columns = printer_columns(kind, wide=wide)
    rows = [["NAME", *(column.name.upper() for column in columns)]]
    for resource in resources:
        if resource.get("kind") != kind:
            continue
        name = f"{kind.lower()}.{GROUP}/{name_of(resource)}" if prefixed else name_of(resource)
        rows.append([name, *(cell(resource, column, now) for column in columns)])
    return align(rows)


def get_table(resources: Sequence[Mapping[str, Any]], kind: str | None = None, *, now: datetime | None = None,
              wide: bool = False) -> str:
    """`llmops get [KIND]`: the table of one kind, or with no kind one table per kind present (as
    `kubectl get llmops` lists the whole category), in lifecycle order."""
    now = now or datetime.now(UTC)
    if kind is not None:
        canonical = resolve_kind(kind)
        if not any(r.get("kind") == canonical for r in resources):
            return f"No {KINDS[canonical].names.plural} found."
        return kind_table(resources, canonical, now, wide=wide)
    present = list(dict.fromkeys(str(r.get("kind")) for r in sorted(resources, key=_lifecycle_key)))
    if not present:
        return "No resources found."
    return "\n\n".join(kind_table(resources, k, now, prefixed=True, wide=wide) for k in present)


# --- describe ---------------------------------------------------------------------------------------------

DESCRIBED_STATUS = ("phase", "waitingFor", "progress", "metrics", "artifactUri", "verdict", "results",
                    "conditions")
"""Status fields `describe` lays out itself; the rest follow generically."""


def describe(resource: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    """`llmops describe NAME`: the kubectl-describe view of one resource with its events.

    The status comes first with what people look for (phase, progress, metrics, artifact, verdict), then
    every other status field, so nothing the runner recorded is hidden.
    """
    now = now or datetime.now(UTC)
    metadata = resource.get("metadata") or {}
    created = metadata.get("creationTimestamp")
    header = [
        ("Name", name_of(resource)),
        ("Namespace", metadata.get("namespace") or "default"),
        ("Kind", resource.get("kind", "")),
        ("API Version", resource.get("apiVersion", "")),
        ("Created", f"{created} ({age(created, now)} ago)" if created else NONE),
        ("Generation", metadata.get("generation", NONE)),
    ]
    lines = _pairs(header, "")
    annotations = metadata.get("annotations") or {}
    lines += ["Annotations:", *_pairs(list(annotations.items()), "  ")] if annotations else ["Annotations:  " + NONE]
    lines.append("Spec:")
    lines += _yaml_lines(resource.get("spec") or {}, "  ")
    lines += _status_lines(resource.get("status") or {}, now)
    lines += _event_lines(events, now)
    return "\n".join(lines)


def _status_lines(status: Mapping[str, Any], now: datetime) -> list[str]:
    if not status:
        return ["Status:  " + NONE]
    progress = status.get("progress")
    fields = [
        ("Phase", status.get("phase")),
        ("Waiting For", status.get("waitingFor")),
        ("Progress", _progress_detail(progress) if progress else None),
        ("Artifact URI", status.get("artifactUri")),
        ("Verdict", status.get("verdict")),
    ]
    lines = ["Status:", *_pairs([(label, value) for label, value in fields if value is not None], "  ")]
    if status.get("metrics"):
        lines += ["  Metrics:", *_field_lines(status["metrics"], "    ")]
    if status.get("results"):
        lines += ["  Results:", results_table(status["results"], "    ")]
    lines += _field_lines({key: value for key, value in status.items() if key not in DESCRIBED_STATUS}, "  ")
    lines += _condition_lines(status.get("conditions") or [], now)
    return lines


def _progress_detail(progress: Mapping[str, Any]) -> str:
    """Progress with its rate and ETA, the three numbers that say whether to wait or worry."""
    parts = [progress_text(progress)]
    if progress.get("rate") is not None:
        parts.append(f"{number(progress['rate'], 3)} {progress.get('unit', 'steps')}/s")
    if progress.get("etaSeconds") is not None:
        parts.append(f"eta {duration(progress['etaSeconds'])}")
    return ", ".join(parts)


def result_rows(results: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """An Evaluation's results as rows under a header: task, metric, value, threshold, passed."""
    rows = [["TASK", "METRIC", "VALUE", "THRESHOLD", "PASSED"]]
    for result in results:
        value = result.get("value")
        rows.append([str(result.get("task", "")), str(result.get("metric", "")),
                     number(value) if value is not None else NONE, str(result.get("threshold") or "-"),
                     passed_text(result.get("passed"))])
    return rows


def results_table(results: Sequence[Mapping[str, Any]], indent: str = "") -> str:
    return align(result_rows(results), indent)


def _condition_lines(conditions: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    if not conditions:
        return ["  Conditions:  " + NONE]
    rows = [["Type", "Status", "Reason", "Message", "Last Transition"],
            ["----", "------", "------", "-------", "---------------"]]
    for item in conditions:
        moment = item.get("lastTransitionTime")
        rows.append([str(item.get("type", "")), str(item.get("status", "")), str(item.get("reason", "")),
                     str(item.get("message", "")), f"{age(moment, now)} ago" if moment else ""])
    return ["  Conditions:", align(rows, "    ")]


def _event_lines(events: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    if not events:
        return ["Events:  " + NONE]
    rows = [["Type", "Reason", "Age", "Message"], ["----", "------", "---", "-------"]]
    for event in events:
        moment = event.get("time")
        rows.append([str(event.get("type", "")), str(event.get("reason", "")), age(moment, now) if moment else "",
                     str(event.get("message", ""))])
    return ["Events:", align(rows, "  ")]


def title(key: str) -> str:
    """A camelCase field name as describe labels it: tokensPerSecond -> Tokens Per Second. Map keys that are
    not field names (`quality.minWords`, `llmops.dev/x`) are data, and are kept as written."""
    if not re.fullmatch(r"[a-z][A-Za-z0-9]*", key):
        return key
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).split()
    return " ".join(word[:1].upper() + word[1:] for word in words)


def _pairs(pairs: Sequence[tuple[str, Any]], indent: str) -> list[str]:
    """`Label:  value` lines with the values aligned, as kubectl describe writes them."""
    width = max((len(label) for label, _ in pairs), default=0) + 2
    return [f"{indent}{(label + ':').ljust(width)} {number(value)}".rstrip() for label, value in pairs]


def _field_lines(fields: Mapping[str, Any], indent: str) -> list[str]:
    """Status fields as describe lays them out: `Label:  value` aligned, mappings indented under their label,
    lists of mappings as `- ` items, so Dataset stats or a Deployment's history read like the rest."""
    width = max((len(title(str(key))) for key in fields), default=0) + 2
    lines = []
    for key, value in fields.items():
        label = title(str(key)) + ":"
        if isinstance(value, Mapping) and value:
            lines += [indent + label, *_field_lines(value, indent + "  ")]
        elif isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            lines.append(indent + label)
            for item in value:
                nested = _field_lines(item, indent + "    ") if isinstance(item, Mapping) else [number(item)]
                lines += [f"{indent}  - {nested[0].lstrip()}", *nested[1:]]
        else:
            text = ", ".join(map(number, value)) if isinstance(value, list) else number(value)
            lines.append(f"{indent}{label.ljust(width)} {text if value not in ({}, []) else NONE}".rstrip())
    return lines


def _yaml_lines(value: Any, indent: str) -> list[str]:
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return [indent + line for line in text.rstrip("\n").splitlines()]
