"""The local store: what a cluster would hold, as files (`llmops run --store DIR`).

```
<store>/resources/<kind>/<name>.yaml   the resource as `kubectl get -o yaml` shows it; status is the model's wire form
<store>/events/<kind>/<name>.jsonl     its Events, one per line
<store>/runs/<kind>/<name>/<run>/      config.json, output.log, termination-log of each run
<store>/artifacts/                     the artifact root (what the chart's artifactRoot is in a cluster)
```
A resource's input digest (its spec and the content of everything it reads) is kept in an annotation, so a
re-run can tell "nothing changed" from "run again". Files are replaced atomically (write, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from llmops.operator.reconcile.workload import Event

INPUT_DIGEST = "llmops.dev/input-digest"
"""sha256 of the spec and of the content of what the resource reads, when its last run started."""
OUTPUT_DIGEST = "llmops.dev/output-digest"
"""sha256 of the content of the resource's artifact, once its run succeeded."""
MANIFEST = "llmops.dev/manifest"
"""The manifest file the resource came from."""


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def content_digest(path: Path) -> str:
    """sha256 over a file, or a directory's files (names and bytes, in sorted order); "absent" if missing."""
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    else:
        return "absent"
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def spec_digest(spec: dict[str, Any], inputs: dict[str, str]) -> str:
    """The input digest: the spec (wire form) and the content digests of its inputs, by name."""
    document = json.dumps({"spec": spec, "inputs": inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode()).hexdigest()


class Store:
    def __init__(self, root: Path):
        self.root = root

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def resource_path(self, kind: str, name: str) -> Path:
        return self.root / "resources" / kind.lower() / f"{name}.yaml"

    def events_path(self, kind: str, name: str) -> Path:
        return self.root / "events" / kind.lower() / f"{name}.jsonl"

    def load(self, kind: str, name: str) -> dict[str, Any] | None:
        path = self.resource_path(kind, name)
        return yaml.safe_load(path.read_text()) if path.exists() else None

    def save(self, body: dict[str, Any]) -> None:
        write_atomically(self.resource_path(body["kind"], body["metadata"]["name"]),
                         yaml.safe_dump(body, sort_keys=False))

    def record(self, kind: str, name: str, events: list[Event], now: datetime | None = None) -> None:
        if not events:
            return
        path = self.events_path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        when = (now or datetime.now(UTC)).isoformat()
        with path.open("a") as f:
            for event in events:
                f.write(json.dumps({"time": when, "type": event.type, "reason": event.reason,
                                    "message": event.message}) + "\n")
