"""The layering a newcomer can rely on, checked on every import statement (top-level and inside functions):

- the operator reads the workloads' contracts (`llmops.trainer.config`) and nothing else of the trainer;
- the pure layers (`operator.api`, `operator.reconcile`, `operator.settings`) import nothing of the runtime
  (Kopf, the Kubernetes client), of local mode or of the CLI;
- no module of `operator.api` imports, directly or not, a module that imports it back.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"operator": "llmops.operator", "trainer": "llmops.trainer"}


def module_name(path: Path) -> str:
    top, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[top], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x` imports module x
    return out


def modules(folder: str) -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted((ROOT / folder).rglob("*.py"))}


def test_the_operator_imports_only_the_contracts_of_the_trainer() -> None:
    offending = {name: sorted(i for i in found if i.startswith("llmops.trainer")
                              and not i.startswith("llmops.trainer.config"))
                 for name, found in modules("operator").items()}
    assert {name: found for name, found in offending.items() if found} == {}


def test_the_pure_layers_import_nothing_of_the_runtime_local_mode_or_the_cli() -> None:
    forbidden = ("llmops.operator.runtime", "llmops.operator.local", "llmops.operator.cli", "kopf", "kubernetes")
    pure = {name: found for name, found in modules("operator").items()
            if name.startswith(("llmops.operator.api", "llmops.operator.reconcile"))
            or name == "llmops.operator.settings"}
    assert len(pure) > 20  # the walk found the modules
    offending = {name: sorted(i for i in found if i.startswith(forbidden)) for name, found in pure.items()}
    assert {name: found for name, found in offending.items() if found} == {}


def test_the_api_modules_import_no_circle() -> None:
    graph = {name: {i for i in found if i.startswith("llmops.operator.api")}
             for name, found in modules("operator/api").items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    # A package's __init__ re-exporting its modules is not a circle of code; module-to-module ones are.
    circles = sorted(name for name in graph if not name.endswith(("api", "v1alpha1")) and reaches(name, name, set()))
    assert circles == []
