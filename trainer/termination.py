"""How a workload tells the operator why it stopped: stderr for people, the pod's termination message for
the operator (it copies it into the resource's Failed condition), and an exit code for the Job's policy."""

from __future__ import annotations

import sys
from pathlib import Path

TERMINATION_LOG = Path("/dev/termination-log")
MESSAGE_LIMIT = 4096  # what Kubernetes keeps of a termination message


def write_termination_message(message: str) -> None:
    if TERMINATION_LOG.exists():
        TERMINATION_LOG.write_text(message[:MESSAGE_LIMIT])


def fail(program: str, message: str, exit_code: int) -> int:
    """Report `message` and return `exit_code` (for `sys.exit`)."""
    print(f"{program}: {message}", file=sys.stderr)
    write_termination_message(message)
    return exit_code
