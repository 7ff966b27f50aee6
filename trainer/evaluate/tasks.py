"""Task data: read and check rows, skipping bad ones with their line numbers (never a crash)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TaskDataError(ValueError):
    """A task has no usable rows, or its data cannot be found; the message names the task."""


@dataclass
class Rows:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """"line N: why", for every skipped row."""


def _jsonl(path: Path) -> list[tuple[int, str]]:
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    return [(n, line) for f in files for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace")
                                                               .splitlines(), start=1) if line.strip()]


def texts(task: str, uri: str, limit: int | None) -> list[str]:
    """Documents for perplexity: a Dataset output (its validation split), a .txt file, or JSONL `text`."""
    path = Path(uri)
    if (path / "documents.jsonl").is_file():
        docs = [json.loads(line) for line in (path / "documents.jsonl").read_text().splitlines() if line]
        found = [d["text"] for d in docs if d.get("split") == "validation"]
    elif path.suffix == ".txt" and path.is_file():
        found = [p for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n") if p.strip()]
    elif path.exists():
        found = [json.loads(line).get("text", "") for _, line in _jsonl(path)]
        found = [t for t in found if isinstance(t, str) and t.strip()]
    else:
        raise TaskDataError(f"task {task!r}: no data at {uri}")
    if not found:
        raise TaskDataError(f"task {task!r}: no text to score in {uri}")
    return found[:limit] if limit else found


def read_rows(task: str, uri: str, check: Any, limit: int | None) -> Rows:
    """JSONL rows that `check(row)` accepts (it returns an error string or None); the rest skipped."""
    path = Path(uri)
    if not path.exists():
        raise TaskDataError(f"task {task!r}: no data at {uri}")
    out = Rows()
    for number, line in _jsonl(path):
        try:
            row = json.loads(line)
            problem = check(row) if isinstance(row, dict) else "not a JSON object"
        except json.JSONDecodeError as error:
            problem = f"bad JSON ({error.msg})"
        if problem:
            out.skipped.append(f"line {number}: {problem}")
        else:
            out.rows.append(row)
        if limit and len(out.rows) >= limit:
            break
    if not out.rows:
        first = f" (first: {out.skipped[0]})" if out.skipped else ""
        raise TaskDataError(f"task {task!r}: no valid rows in {uri}; {len(out.skipped)} skipped{first}")
    return out


def multiple_choice_problem(row: dict[str, Any]) -> str | None:
    """lm-eval layout: question (or query), choices, answer (or gold) as an index."""
    question = row.get("question", row.get("query"))
    choices, answer = row.get("choices"), row.get("answer", row.get("gold"))
    if not isinstance(question, str):
        return "no question"
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        return "choices must be a list of strings"
    if len(choices) < 2:
        return f"needs at least two choices, has {len(choices)}"
    if not isinstance(answer, int) or not 0 <= answer < len(choices):
        return f"answer {answer!r} is not an index into {len(choices)} choices"
    return None


def has_references(row: dict[str, Any]) -> bool:
    return "answer" in row or "answers" in row


def _question_problem(row: dict[str, Any]) -> str | None:
    return None if isinstance(row.get("question", row.get("prompt")), str) else "no question"


def _references_problem(row: dict[str, Any]) -> str | None:
    answer = row.get("answer", row.get("answers"))
    listed = isinstance(answer, list) and answer and all(isinstance(a, str) for a in answer)
    return None if isinstance(answer, str) or listed else "answer must be a string or a list of strings"


def exact_match_problem(row: dict[str, Any]) -> str | None:
    """question (or prompt), and the reference answer (answer) or answers (answers)."""
    return _question_problem(row) or _references_problem(row)


def judged_problem(row: dict[str, Any]) -> str | None:
    """A row of a judged winRate task: a question; references are optional, but checked when given."""
    return _question_problem(row) or (_references_problem(row) if has_references(row) else None)


def classification_problem(row: dict[str, Any]) -> str | None:
    if not isinstance(row.get("text"), str):
        return "no text"
    if not isinstance(row.get("label"), str | int):
        return "no label"
    return None
