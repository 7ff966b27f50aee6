"""What curation counted, whichever path (in memory or streaming) produced it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Counts:
    read: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    lines_removed: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    train: int = 0
    validation: int = 0
