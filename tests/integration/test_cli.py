"""The `llmops` command as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import EXAMPLES, ROOT, example, patched


def llmops(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("llmops", path=str(Path(sys.executable).parent))
    assert executable, "the console script `llmops` is installed with the package"
    return subprocess.run([executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_help_lists_the_sub_commands() -> None:
    result = llmops("--help")
    assert result.returncode == 0
    for command in ("generate", "validate", "run", "operator", "serve"):
        assert command in result.stdout


def test_validate_accepts_the_lifecycle_examples() -> None:
    result = llmops("validate", "-f", str(EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" valid") == 5


def test_validate_rejects_a_bad_manifest_naming_the_field(tmp_path: Path) -> None:
    bad = patched(example("Deployment"), {"spec": {"canary": {"steps": [{"weight": 80}, {"weight": 20}]}}})
    good = example("Dataset")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([good, bad]))
    result = llmops("validate", "-f", str(path))
    assert result.returncode == 1
    assert "Dataset/shakespeare valid" in result.stdout
    assert "spec.canary.steps: Invalid value" in result.stderr


def test_generate_check_passes_on_a_clean_tree() -> None:
    result = llmops("generate", "--check")
    assert result.returncode == 0, result.stderr
