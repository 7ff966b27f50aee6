"""The order of a local run: each resource after what it references, from the same `references()` the
operator watches. A reference to a resource not in the set, and a cycle, are errors before anything runs."""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Callable
from typing import Any

from llmops.operator.reconcile import dataset, deployment, evaluation, finetune, pretrainjob

from .manifests import Loaded, ManifestError

KIND_ORDER = ("Dataset", "PretrainJob", "FineTune", "Evaluation", "Deployment")
REFERENCES: dict[str, Callable[[Any], list[tuple[str, str]]]] = {
    "Dataset": dataset.references, "PretrainJob": pretrainjob.references, "FineTune": finetune.references,
    "Evaluation": evaluation.references, "Deployment": deployment.references}


def references(item: Loaded) -> list[tuple[str, str]]:
    return list(dict.fromkeys(REFERENCES[item.resource.kind](item.resource)))


def ordered(items: list[Loaded]) -> list[Loaded]:
    """Topological order (ties: lifecycle order of kinds, then name); raises ManifestError for dangling
    references and cycles."""
    by_key = {item.key: item for item in items}
    problems = [f"{item.file}: {item.title} references {kind} {name}, which is not among the manifests given: "
                f"add its manifest to the run" for item in items for kind, name in references(item)
                if (kind, name) not in by_key]
    if problems:
        raise ManifestError("\n".join(problems))
    sorter = graphlib.TopologicalSorter({item.key: references(item) for item in items})
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        cycle = " -> ".join(f"{kind}/{name}" for kind, name in error.args[1])
        raise ManifestError(f"the references form a cycle: {cycle}; a resource cannot wait for itself") from None
    out: list[Loaded] = []
    ready: list[tuple[int, str, str]] = []  # a heap: the earliest kind in the lifecycle first, then by name
    while sorter.is_active():
        for kind, name in sorter.get_ready():
            heapq.heappush(ready, (KIND_ORDER.index(kind), kind, name))
        _, kind, name = heapq.heappop(ready)
        out.append(by_key[(kind, name)])
        sorter.done((kind, name))
    return out


def upstream(item: Loaded, items: list[Loaded]) -> list[Loaded]:
    """What `item` references, directly."""
    by_key = {i.key: i for i in items}
    return [by_key[key] for key in references(item)]
