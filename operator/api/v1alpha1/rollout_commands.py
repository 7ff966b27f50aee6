"""Manual rollout commands: annotations on an llmops.dev Deployment, each acted on once.

The operator never writes `.spec` (GitOps stays clean), so `llmops rollout promote|abort|retry|undo` asks for an
action by setting an annotation to a fresh value. The operator acts on a value it has not handled yet and records
it in `status.handledCommands[<key>]`; setting the same value again does nothing.

    llmops.dev/rollout-promote: "<token>"             promote the current canary now
    llmops.dev/rollout-abort:   "<token>"             roll the current canary back now (outcome Aborted)
    llmops.dev/rollout-retry:   "<token>"             retry a revision RolledBack/Aborted/Failed at this spec
    llmops.dev/rollout-undo:    "<revision>@<token>"  serve revision N from status.history until the spec changes

`<token>` is any unique string; `new_token(now)` makes one from the clock (UTC, ISO 8601, microseconds) and
`command_value(token, revision)` the annotation value.
The operator (reconcile/deployment.py) and the CLI (rollout_cli.py) both import the keys from here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

PREFIX: Final = "llmops.dev/rollout-"

PROMOTE: Final = PREFIX + "promote"
"""Promote the current canary now: skip the remaining steps (also resumes a rollout paused by analysis)."""

ABORT: Final = PREFIX + "abort"
"""Roll the current canary back now: outcome Aborted, not retried until the spec changes (or a retry)."""

RETRY: Final = PREFIX + "retry"
"""Roll out again a revision that was RolledBack, Aborted or Failed at the current spec."""

UNDO: Final = PREFIX + "undo"
"""`<revision>@<token>`: serve that revision of status.history instead of spec.model until the spec changes."""

KEYS: Final[tuple[str, ...]] = (PROMOTE, ABORT, RETRY, UNDO)
"""Every command annotation, in the order the CLI lists them."""

UNDO_SEPARATOR: Final = "@"


class CommandValueError(ValueError):
    """An annotation value that is not a command the operator can act on."""


def new_token(now: datetime) -> str:
    """A unique token from the clock: UTC in ISO 8601 with microseconds, e.g. 2026-12-01T10:00:00.000001+00:00."""
    if now.tzinfo is None:
        raise ValueError("new_token() needs an aware datetime (e.g. datetime.now(UTC)), not a naive one")
    return now.astimezone(UTC).isoformat(timespec="microseconds")


def command_value(token: str, revision: int | None = None) -> str:
    """The annotation value of a command: the token itself, or `<revision>@<token>` for UNDO (give `revision`)."""
    if not token:
        raise ValueError("a command token must not be empty (use new_token(now))")
    if revision is None:
        return token
    if revision < 1:
        raise ValueError(f"revisions are numbered from 1, got {revision}")
    return f"{revision}{UNDO_SEPARATOR}{token}"


def parse_undo(value: str) -> tuple[int, str]:
    """(revision, token) of an UNDO value such as `3@2026-12-01T10:00:00.000001+00:00`.

    Raises CommandValueError, naming the annotation and the expected form, when the value is not one.
    """
    revision, separator, rest = value.partition(UNDO_SEPARATOR)
    if not separator or not rest or not revision.isdigit() or int(revision) < 1:
        raise CommandValueError(
            f"annotation {UNDO} must be '<revision>{UNDO_SEPARATOR}<token>' with a revision number from "
            f"status.history (e.g. '3{UNDO_SEPARATOR}2026-12-01T10:00:00.000001+00:00'), got {value!r}; "
            "set it with `llmops rollout undo NAME --to-revision N`")
    return int(revision), rest
