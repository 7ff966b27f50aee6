"""Loading manifests for a local run: the checks admission makes, then what only a local run needs.

Every manifest is admitted exactly as the API server would (schema defaults, structure, CEL), and every
problem of the whole set is reported before anything runs, naming file, resource and field. Then relative
`uri:` paths are made absolute next to the manifest file that names them, a local input that does not exist
is reported as such, and `pvc://` (a cluster's volume claim) is refused with the way out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.operator.api.admission import AdmissionError, admit, load_manifests, parse
from llmops.operator.api.v1alpha1.common import Resource
from llmops.trainer.config.layout import is_local, local_path

DEFAULT_NAMESPACE = "default"
OUTPUT_FIELDS = ("output",)
"""Spec parts that name where a resource writes (it need not exist yet)."""


@dataclass(frozen=True)
class Loaded:
    file: Path
    resource: Resource

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource.kind, self.resource.metadata.name)

    @property
    def title(self) -> str:
        return f"{self.resource.kind}/{self.resource.metadata.name}"


class ManifestError(ValueError):
    """One or more manifests cannot run; the message lists every problem, one per line."""


def uri_fields(value: Any, path: str = "spec") -> Iterator[tuple[str, dict[str, Any], str]]:
    """(field path, the dict holding it, key) of every `uri` field in a spec, however deep."""
    if isinstance(value, dict):
        for key, child in value.items():
            where = f"{path}.{key}"
            if key == "uri" and isinstance(child, str):
                yield where, value, key
            else:
                yield from uri_fields(child, where)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from uri_fields(child, f"{path}[{index}]")


def resolve_uris(manifest: dict[str, Any], directory: Path) -> list[str]:
    """Make relative `uri:` paths absolute next to the manifest (in place); the problems found, as messages."""
    problems = []
    for where, holder, key in uri_fields(manifest.get("spec") or {}):
        uri = holder[key]
        if uri.startswith("pvc://"):
            problems.append(f"{where}: {uri} names a PersistentVolumeClaim, which only a cluster has: give a local "
                            "path (relative paths are read next to the manifest) or an fsspec URI (s3://, gs://)")
            continue
        if not is_local(uri):
            continue
        path = local_path(uri)
        absolute = path if path.is_absolute() else (directory / path).resolve()
        holder[key] = str(absolute)
        output = any(where.startswith(f"spec.{part}.") for part in OUTPUT_FIELDS)
        if not output and not absolute.exists():
            problems.append(f"{where}: {uri} does not exist (looked for {absolute}); relative paths are read next "
                            "to the manifest file")
    return problems


def load(paths: list[Path]) -> list[Loaded]:
    """Every resource in the files and directories given, admitted and with local URIs resolved; raises
    ManifestError listing every problem when any manifest cannot run."""
    problems, loaded, seen = [], [], set()
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ManifestError("\n".join(f"{p}: no such file or directory" for p in missing))
    documents = load_manifests(paths)
    if not documents:
        raise ManifestError(f"no manifests found in {', '.join(map(str, paths))}")
    for file, manifest in documents:
        if not isinstance(manifest, dict):
            problems.append(f"{file}: a YAML document that is not a manifest (a mapping with apiVersion, kind, "
                            "metadata and spec)")
            continue
        if not isinstance(manifest.get("metadata"), dict):
            manifest["metadata"] = {}
        title = f"{manifest.get('kind')}/{(manifest.get('metadata') or {}).get('name')}"
        manifest.setdefault("metadata", {}).setdefault("namespace", DEFAULT_NAMESPACE)
        try:
            admitted = admit(manifest)
        except AdmissionError as error:
            problems.append(f"{file}: {error}")
            continue
        found = resolve_uris(admitted, file.parent)
        problems += [f"{file}: {title}: {problem}" for problem in found]
        if found:
            continue
        resource = parse(admitted)
        if (resource.kind, resource.metadata.name) in seen:
            problems.append(f"{file}: {title} is given twice; names are unique per kind")
            continue
        seen.add((resource.kind, resource.metadata.name))
        loaded.append(Loaded(file, resource))
    if problems:
        raise ManifestError("\n".join(problems))
    return loaded
