"""Progress for people (a line redrawn in a terminal) and for the operator (JSON lines on stdout)."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class Progress:
    """`report()` prints one JSON line per call; in a terminal it also redraws a one-line summary."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.started = time.monotonic()

    def report(self, stage: str, completed: int, total: int | None, unit: str) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        event = {"event": "progress", "stage": stage, "completed": completed, "total": total, "unit": unit,
                 "rate": round(completed / elapsed, 1) if elapsed > 0 else None, "elapsedSeconds": round(elapsed, 2)}
        if self.stream.isatty():
            share = f"{completed}/{total}" if total else str(completed)
            sys.stderr.write(f"\r{stage:<10} {share} {unit} ({event['rate']}/s)\x1b[K")
            if stage == "done":
                sys.stderr.write("\n")
        self.stream.write(json.dumps(event) + "\n")
        self.stream.flush()
