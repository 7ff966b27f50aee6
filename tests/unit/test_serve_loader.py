"""Where the server finds a model: local directories, fsspec URIs copied to a cache, and clear errors."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from llmops.trainer.serve.loader import ModelLoadError, check_files, localize
from llmops.trainer.serve.metrics import METRICS, PREFIX
from tests.conftest import ROOT


def test_a_remote_model_is_copied_once_into_the_cache(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        fs.pipe(f"/models/m1/{name}", name.encode())
    local = localize("memory://models/m1", cache_dir=tmp_path)
    assert local.parent == tmp_path and sorted(p.name for p in local.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    check_files(local)
    fs.rm("/models/m1", recursive=True)
    assert localize("memory://models/m1", cache_dir=tmp_path) == local  # served from the cache
    with pytest.raises(ModelLoadError, match="memory://models/absent does not exist"):
        localize("memory://models/absent", cache_dir=tmp_path)


@pytest.mark.parametrize(("present", "missing"), [
    ((), "no config.json"),
    (("config.json", "tokenizer.json"), "no weights: expected one of model.safetensors"),
    (("config.json", "model.safetensors"), "no tokenizer: expected one of tokenizer.json"),
])
def test_a_missing_file_is_named(tmp_path: Path, present: tuple[str, ...], missing: str) -> None:
    for name in present:
        (tmp_path / name).write_text("{}")
    with pytest.raises(ModelLoadError, match=missing):
        check_files(tmp_path)


def test_a_missing_local_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=f"{tmp_path / 'nope'} does not exist"):
        localize(str(tmp_path / "nope"))


def test_every_metric_is_documented_in_the_readme_and_nowhere_else_invented() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = {word.strip("`") for word in readme.split() if word.startswith(f"`{PREFIX}")}
    assert documented == set(METRICS)
