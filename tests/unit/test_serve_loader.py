"""Where the server finds a model: local directories, fsspec URIs staged into a cache, and clear errors."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from llmops.trainer.serve.loader import ModelLoadError, check_files, localize
from llmops.trainer.serve.metrics import METRICS, PREFIX
from tests.conftest import ROOT


def test_a_remote_model_is_copied_into_the_cache_and_reused_until_it_changes(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        fs.pipe(f"/models/m1/{name}", name.encode())
    local = localize("memory://models/m1", cache_dir=tmp_path)
    assert local.parent == tmp_path and sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    check_files(local)
    assert localize("memory://models/m1", cache_dir=tmp_path) == local  # served from the cache
    fs.pipe("/models/m1/model.safetensors", b"retrained")
    assert (localize("memory://models/m1", cache_dir=tmp_path) / "model.safetensors").read_bytes() == b"retrained"
    fs.rm("/models/m1", recursive=True)
    with pytest.raises(ModelLoadError, match="model: no object at memory://models/m1"):
        localize("memory://models/m1", cache_dir=tmp_path)
    fs.pipe("/models/m2/tokenizer.json", b"{}")
    with pytest.raises(ModelLoadError, match="no object at memory://models/m2/config.json"):
        localize("memory://models/m2", cache_dir=tmp_path)


@pytest.mark.parametrize(("present", "missing"), [
    ((), "no config.json: not a Hugging Face-format model directory"),
    (("config.json", "tokenizer.json"), "no weights: expected one of model.safetensors"),
    (("config.json", "model.safetensors"), "no tokenizer: expected one of tokenizer.json"),
])
def test_a_missing_file_is_named(tmp_path: Path, present: tuple[str, ...], missing: str) -> None:
    for name in present:
        (tmp_path / name).write_text("{}")
    with pytest.raises(ModelLoadError, match=f"model {tmp_path} has {missing}"):
        check_files(tmp_path)
    with pytest.raises(ModelLoadError, match=f"model s3://models/m has {missing}"):  # named as the user gave it
        check_files(tmp_path, "s3://models/m")


def test_a_missing_local_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=f"model {tmp_path / 'nope'} does not exist"):
        localize(str(tmp_path / "nope"))


def test_every_metric_is_documented_in_the_readme_and_nowhere_else_invented() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = {word.strip("`") for word in readme.split() if word.startswith(f"`{PREFIX}")}
    assert documented == set(METRICS)
