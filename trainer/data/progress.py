"""Progress for people (a line redrawn in a terminal) and for the operator (ProgressLine JSON on stdout)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from llmops.trainer.config.progress import ProgressLine


class Progress:
    """`report()` prints one ProgressLine per call; in a terminal it also redraws a one-line summary."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.started = time.monotonic()

    def report(self, stage: str, completed: int, total: int | None, unit: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        line = ProgressLine(stage=stage, completed=completed, total=total, unit=unit,
                            rate=round(completed / elapsed, 1) if elapsed > 0 else None,
                            elapsed_seconds=round(elapsed, 2))
        if self.stream.isatty():
            share = f"{completed}/{total}" if total else str(completed)
            sys.stderr.write(f"\r{stage:<10} {share} {unit} ({line.rate}/s)\x1b[K")
            if stage == "done":
                sys.stderr.write("\n")
        self.stream.write(line.to_line() + "\n")
        self.stream.flush()
