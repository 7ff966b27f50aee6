"""The folders install under the `llmops` namespace and never shadow the standard library."""

from __future__ import annotations

import importlib
import operator
import subprocess
import sys
import tomllib
from pathlib import Path


def test_stdlib_operator_is_not_shadowed() -> None:
    assert operator.__file__ is not None and "site-packages" not in operator.__file__
    assert Path(operator.__file__).parent == Path(sys.modules["os"].__file__).parent
    assert operator.add(2, 3) == 5


def test_folders_import_under_the_llmops_namespace(root: Path) -> None:
    module = importlib.import_module("llmops.operator.api.v1alpha1")
    assert Path(module.__file__).is_relative_to(root / "operator")
    trainer = importlib.import_module("llmops.trainer.config")
    assert Path(trainer.__file__).is_relative_to(root / "trainer")


def test_every_package_folder_is_listed_in_pyproject(root: Path) -> None:
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    prefixes = {folder: name for name, folder in setuptools["package-dir"].items()}
    found = set()
    for folder, name in prefixes.items():
        for init in (root / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(root / folder).parts
            found.add(".".join((name, *relative)))
    assert found == set(setuptools["packages"])


def test_the_operator_imports_no_torch() -> None:
    # The operator image installs no torch: the API, trainer.config and the reconcilers must not need it.
    # A fresh interpreter, since other tests of this session import torch.
    code = ("import sys, llmops.operator.api.v1alpha1, llmops.operator.reconcile.dataset, "
            "llmops.operator.runtime.handlers; heavy = {'torch', 'transformers', 'ray'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")
