"""The terminal view of `llmops run`: what is running now, what changed, and what came out at the end.

On a terminal the run is a live table, one row per resource, redrawn on each `update`. Anywhere else (CI logs,
pipes) redrawing would flood the log, so the plain mode prints a line only when something a reader cares about
changed: a resource's phase or Ready reason, or (at most every `progress_every` seconds) its progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llmops.operator.local.inspect import (
    align,
    condition,
    duration,
    name_of,
    number,
    progress_text,
    ref,
    result_rows,
)
from llmops.trainer.config import layout

PHASE_STYLES = {
    "Succeeded": "green", "Available": "green", "Passed": "green",
    "Running": "cyan", "Progressing": "cyan",
    "Waiting": "dim", "Pending": "dim",
    "Degraded": "yellow", "RollingBack": "yellow", "Inconclusive": "yellow",
    "Failed": "bold red",
    "passed": "green", "failed": "red",
}
"""Colours of phases and verdicts on a terminal (a plain console drops them)."""

MODEL_FILES = ("config.json", "model-card.md")
"""A directory holding either is a model directory (a PretrainJob's or FineTune's export)."""

CARD_ROWS = 8
"""Rows of the model card's run summary shown in the summary; the card itself has the rest."""


# --- What one resource shows ------------------------------------------------------------------------------

def phase_of(resource: Mapping[str, Any]) -> str:
    """The resource's phase; one the runner has not given a status yet has not started, so it is Pending."""
    return str((resource.get("status") or {}).get("phase") or "Pending")


def ready_reason(resource: Mapping[str, Any]) -> str:
    """The Ready condition's reason: it changes when the phase does not (e.g. Waiting for another input)."""
    ready = condition(resource, "Ready")
    return str(ready.get("reason", "")) if ready else ""


def message_of(resource: Mapping[str, Any]) -> str:
    """What the resource is doing or waiting for, in its own words: the Ready message, else waitingFor."""
    ready = condition(resource, "Ready")
    if ready and ready.get("message"):
        return str(ready["message"])
    return str((resource.get("status") or {}).get("waitingFor") or "")


def _progress(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    return (resource.get("status") or {}).get("progress") or {}


def loss_text(resource: Mapping[str, Any]) -> str:
    """The training loss to 4 significant digits; blank for kinds that do not train."""
    loss = ((resource.get("status") or {}).get("metrics") or {}).get("loss")
    return number(float(loss), 4) if isinstance(loss, int | float) else ""


def rate_text(progress: Mapping[str, Any]) -> str:
    """`12.3 steps/s`: the rate in the progress's own unit."""
    rate = progress.get("rate")
    return f"{number(float(rate), 3)} {progress.get('unit', 'steps')}/s" if isinstance(rate, int | float) else ""


def eta_text(progress: Mapping[str, Any]) -> str:
    eta = progress.get("etaSeconds")
    return duration(eta) if isinstance(eta, int | float) and math.isfinite(eta) else ""


def step_text(progress: Mapping[str, Any]) -> str:
    """`40/200 steps`: the progress without its percent, which the live table has no room for."""
    return progress_text({key: value for key, value in progress.items() if key != "percent"})


def state_line(resource: Mapping[str, Any]) -> str:
    """The plain-mode line for a change of phase or Ready reason:
    `PretrainJob/tiny Waiting (InputNotReady: waiting for Dataset shakespeare)`."""
    reason, message = ready_reason(resource), message_of(resource)
    detail = ": ".join(part for part in (reason, message) if part)
    return f"{ref(resource)} {phase_of(resource)}" + (f" ({detail})" if detail else "")


def progress_line(resource: Mapping[str, Any]) -> str:
    """The plain-mode progress line, e.g. `PretrainJob/tiny Running step 40/200 loss 5.123 2.1 steps/s eta
    1m16s`; empty when the resource reports no progress."""
    progress = _progress(resource)
    if not progress:
        return ""
    unit = str(progress.get("unit", "steps"))
    total = progress.get("total")
    count = f"{progress.get('completed', 0)}/{total}" if total is not None else f"{progress.get('completed', 0)}"
    loss = loss_text(resource)
    parts = [ref(resource), phase_of(resource), f"{unit.removesuffix('s')} {count}",
             f"loss {loss}" if loss else "", rate_text(progress),
             f"eta {eta_text(progress)}" if eta_text(progress) else ""]
    return " ".join(part for part in parts if part)


def resource_table(resources: Sequence[Mapping[str, Any]]) -> Table:
    """The live table: one row per resource; the message column gives way first when the terminal is narrow."""
    table = Table(box=None, pad_edge=False)  # no rules: every column of a terminal's width is worth having
    for header in ("KIND", "NAME", "PHASE", "STEP", "LOSS", "RATE", "ETA"):
        table.add_column(header, no_wrap=True, justify="right" if header in ("LOSS", "RATE", "ETA") else "left")
    # The only column rich may narrow before the others (it is not no_wrap); its text still ends in an
    # ellipsis rather than wrapping, so each resource stays one line.
    table.add_column("MESSAGE")
    for resource in resources:
        phase, progress = phase_of(resource), _progress(resource)
        table.add_row(str(resource.get("kind", "")), name_of(resource), Text(phase, style=PHASE_STYLES.get(phase, "")),
                      step_text(progress), loss_text(resource), rate_text(progress), eta_text(progress),
                      Text(message_of(resource), no_wrap=True, overflow="ellipsis"))
    return table


# --- The running view -------------------------------------------------------------------------------------

class Display:
    """Shows a run as it goes: `update` with every poll of the store, `log` for the runner's own messages.

    Live mode (a terminal) redraws a table; plain mode prints a line per change and rate-limits progress
    lines, so a CI log of a long training run stays readable. The clock is injectable so that the
    rate limit can be tested without waiting.
    """

    def __init__(self, console: Console | None = None, *, live: bool | None = None, progress_every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.console = console or Console()
        self.live = self.console.is_terminal if live is None else live
        self.progress_every = progress_every
        self._clock = clock
        self._live: Live | None = None
        self._states: dict[str, tuple[str, str]] = {}  # per resource: the phase and Ready reason last printed
        self._progress: dict[str, tuple[float, str]] = {}  # per resource: when a line was last printed, and the
        # progress it showed then (a progress line repeats only when the progress moved)

    def __enter__(self) -> Display:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Begin the live table (a no-op in plain mode, or when it is running already)."""
        if self.live and self._live is None:
            # Redrawn on update only: the store changes no faster than the runner polls, and no refresh
            # thread means nothing draws after close.
            self._live = Live(Text(""), console=self.console, auto_refresh=False)
            self._live.start()

    def close(self) -> None:
        """Stop redrawing and leave the last table on screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, resources: Sequence[Mapping[str, Any]]) -> None:
        """Show the resources as they are now (as read from the store)."""
        if self.live:
            self.start()
            assert self._live is not None
            self._live.update(resource_table(resources), refresh=True)
            return
        for resource in resources:
            line = self._plain_line(resource)
            if line:
                self.log(line)

    def log(self, text: str) -> None:
        """A line of the runner's own (above the live table on a terminal). Not markup: log text is printed as
        written, brackets included, and is never wrapped, so it greps like a log."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def finish(self, resources: Sequence[Mapping[str, Any]], store: Path) -> None:
        """End the run's view: leave the last table on screen and print the summary below it. Off a terminal
        its lines are printed unwrapped, whatever width the console guesses for a log."""
        self.close()
        self.console.print(summary(resources, store), soft_wrap=not self.console.is_terminal)

    def _plain_line(self, resource: Mapping[str, Any]) -> str:
        """The line plain mode prints for this poll of `resource`, or "" when nothing worth a line changed."""
        key, now = ref(resource), self._clock()
        state = (phase_of(resource), ready_reason(resource))
        if self._states.get(key) != state:
            self._states[key] = state
            self._progress[key] = (now, progress_line(resource))  # the next progress line is due from here
            return state_line(resource)
        if state[0] != "Running":
            return ""
        line = progress_line(resource)
        printed_at, printed = self._progress.get(key, (-math.inf, ""))
        if not line or line == printed or now - printed_at < self.progress_every:
            return ""
        self._progress[key] = (now, line)
        return line


# --- The end of a run -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    """One part of the summary as rows of text, so that it is laid out once and drawn two ways."""

    heading: str | None
    rows: list[list[str]]
    header: bool = True
    """Whether the first row names the columns."""


@dataclass(frozen=True)
class Summary:
    """What a run produced. On a terminal it draws as rich tables with coloured phases and verdicts; anywhere
    else as kubectl-style aligned text whose lines are never wrapped, so paths in a CI log stay whole (print
    it with `soft_wrap=True`, as `Display.summary` does, or `str()` it)."""

    sections: tuple[Section, ...]

    def __str__(self) -> str:
        parts = []
        for section in self.sections:
            body = align(section.rows, "  " if section.heading else "")
            parts.append(f"{section.heading}\n{body}" if section.heading else body)
        return "\n\n".join(parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not options.is_terminal:
            yield Text(str(self), no_wrap=True, overflow="ignore")
            return
        for index, section in enumerate(self.sections):
            if section.heading:
                yield Text(("\n" if index else "") + section.heading, style="bold")
            yield _rich_table(section)


def _rich_table(section: Section) -> Table:
    header, *body = section.rows if section.header else [[""] * len(section.rows[0]), *section.rows]
    table = Table(box=box.SIMPLE_HEAD if section.header else None, show_header=section.header, pad_edge=False)
    for name in header:
        table.add_column(name, overflow="fold")
    for row in body:
        table.add_row(*(Text(text, style=PHASE_STYLES.get(text, "")) for text in row))
    return table


def summary(resources: Sequence[Mapping[str, Any]], store: Path) -> Summary:
    """What a run produced, to print once it ended: every resource's phase and artifact, each model's card and
    loss curve, and each Evaluation's verdict with its results."""
    sections = [_outcome_section(resources)]
    for resource in resources:
        model = model_dir(resource, store)
        if model is not None:
            sections.append(_model_section(resource, model))
    sections += [_evaluation_section(r) for r in resources if r.get("kind") == "Evaluation"]
    return Summary(tuple(sections))


def _outcome_section(resources: Sequence[Mapping[str, Any]]) -> Section:
    rows = [["KIND", "NAME", "PHASE", "ARTIFACT"]]
    rows += [[str(r.get("kind", "")), name_of(r), phase_of(r), str((r.get("status") or {}).get("artifactUri") or "")]
             for r in resources]
    return Section(None, rows)


def local_path(uri: str, store: Path) -> Path | None:
    """Where an artifact URI is on this machine: a path or `file://` URI (relative ones are under the store);
    None for remote schemes (s3://, pvc://), whose files cannot be shown here."""
    if not layout.is_local(uri):
        return None
    path = layout.local_path(uri)
    return path if path.is_absolute() else store / path


def model_dir(resource: Mapping[str, Any], store: Path) -> Path | None:
    """The resource's artifact directory if it holds a model (config.json or a model card), else None."""
    uri = (resource.get("status") or {}).get("artifactUri")
    path = local_path(str(uri), store) if uri else None
    if path is None or not path.is_dir():
        return None
    return path if any((path / name).is_file() for name in MODEL_FILES) else None


def card_rows(markdown: str, limit: int = CARD_ROWS) -> list[tuple[str, str]]:
    """The body rows of the first table in a model card (its run summary: parameters, steps, final loss)."""
    rows: list[tuple[str, str]] = []
    table = [line.strip() for line in _first_table(markdown.splitlines())]
    for line in table[2:]:  # after the header and the |---| separator
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append((cells[0], " | ".join(cells[1:])))
    return rows[:limit]


def _first_table(lines: Sequence[str]) -> list[str]:
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].lstrip().startswith("|")), len(lines))
    return list(lines[start:end])


def _model_section(resource: Mapping[str, Any], model: Path) -> Section:
    rows = []
    card = model / "model-card.md"
    if card.is_file():
        rows.append(["model card", str(card)])
        rows += [[f"  {key}", value] for key, value in card_rows(card.read_text(errors="replace"))]
    curve = model / "loss-curve.png"
    if curve.is_file():
        rows.append(["loss curve", str(curve)])
    return Section(f"Model of {ref(resource)}: {model}", rows or [["files", "no model card or loss curve"]],
                   header=False)


def _evaluation_section(evaluation: Mapping[str, Any]) -> Section:
    status = evaluation.get("status") or {}
    heading = f"{ref(evaluation)}: {status.get('verdict') or 'no verdict'}"
    results = status.get("results") or []
    return Section(heading, result_rows(results)) if results else Section(heading, [["no results"]], header=False)
