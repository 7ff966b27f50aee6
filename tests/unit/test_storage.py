"""Workload I/O over fsspec (trainer/storage.py), on local paths and fsspec's in-memory store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from llmops.trainer import storage
from llmops.trainer.config import layout


@pytest.fixture
def store() -> Iterator[str]:
    """A fresh memory:// prefix (fsspec's memory store is process-wide)."""
    root = f"memory://test-{uuid.uuid4().hex[:8]}"
    yield root
    storage.delete(root)


def put(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.pipe_file(path, data)


def test_a_local_input_is_used_where_it_is(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    assert storage.stage_in(str(tmp_path), "dataset", require="manifest.json") == tmp_path
    assert storage.stage_in(f"file://{tmp_path}", "dataset") == tmp_path
    with pytest.raises(storage.StorageError, match=f"dataset {tmp_path / 'absent'} does not exist"):
        storage.stage_in(str(tmp_path / "absent"), "dataset")
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(storage.StorageError, match="is incomplete: no manifest.json in it"):
        storage.stage_in(str(tmp_path), "dataset", require="manifest.json")


def test_a_remote_directory_is_copied_once_and_again_when_it_changes(store: str, tmp_path: Path) -> None:
    put(f"{store}/ds/manifest.json", b"{}")
    put(f"{store}/ds/shards/index.json", b"[1]")
    first = storage.stage_in(f"{store}/ds", "dataset", require="manifest.json", cache=tmp_path)
    assert first.parent == tmp_path
    assert (first / "shards" / "index.json").read_bytes() == b"[1]"
    (first / "shards" / "index.json").write_bytes(b"touched here")  # a cache hit would keep this
    assert storage.stage_in(f"{store}/ds", "dataset", cache=tmp_path) == first
    assert (first / "shards" / "index.json").read_bytes() == b"touched here"

    put(f"{store}/ds/shards/index.json", b"[1, 2]")  # the output was re-written
    again = storage.stage_in(f"{store}/ds", "dataset", cache=tmp_path)
    assert again == first and (again / "shards" / "index.json").read_bytes() == b"[1, 2]"
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no scratch copies left behind


def test_a_remote_file_is_staged_as_a_file(store: str, tmp_path: Path) -> None:
    put(f"{store}/data/records.jsonl", b'{"prompt": "a"}\n')
    path = storage.stage_in(f"{store}/data/records.jsonl", "data", cache=tmp_path)
    assert path.name == "records.jsonl" and path.read_bytes() == b'{"prompt": "a"}\n'


def test_missing_remote_inputs_are_named(store: str, tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError, match=f"dataset: no object at {store}/absent"):
        storage.stage_in(f"{store}/absent", "dataset", cache=tmp_path)
    put(f"{store}/half/shards/0.bin", b"x")
    with pytest.raises(storage.StorageError, match=f"is incomplete: no object at {store}/half/manifest.json"):
        storage.stage_in(f"{store}/half", "dataset", require="manifest.json", cache=tmp_path)


def test_an_upload_replaces_the_output_and_writes_the_marker_last(store: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    put(f"{store}/model/stale.bin", b"from an older run")
    built = tmp_path / "built"
    (built / "sub").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "sub/extra.txt"):
        (built / name).write_text(name)
    fs = fsspec.filesystem("memory")
    written: list[str] = []
    real_put = type(fs).put_file
    monkeypatch.setattr(type(fs), "put_file", lambda self, lpath, rpath, **kw: (
        written.append(rpath.rsplit("/", 1)[-1]), real_put(self, lpath, rpath, **kw))[1])

    storage.upload_dir(built, f"{store}/model", last="config.json")
    assert written[-1] == "config.json" and sorted(written) == ["config.json", "extra.txt", "model.safetensors"]
    assert sorted(storage.listing(f"{store}/model")) == ["config.json", "model.safetensors", "sub/extra.txt"]


def test_a_local_upload_swaps_the_whole_directory_in(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model"
    target.mkdir(parents=True)
    (target / "stale.bin").write_text("old")
    built = tmp_path / "built"
    built.mkdir()
    (built / "config.json").write_text("{}")
    storage.upload_dir(built, str(target), last="config.json")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no scratch or old copy left
    with pytest.raises(ValueError, match="has no manifest.json"):
        storage.upload_dir(built, str(target), last="manifest.json")


def test_an_output_directory_is_uploaded_only_when_it_was_finished(store: str) -> None:
    with storage.output_dir(f"{store}/model", last="config.json") as out:
        out.mkdir()
        (out / "config.json").write_text("{}")
    assert storage.exists(f"{store}/model/config.json")
    with pytest.raises(RuntimeError), storage.output_dir(f"{store}/broken", last="config.json") as out:
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise RuntimeError("export failed")
    assert not storage.exists(f"{store}/broken")


def test_single_files_and_deletes(store: str, tmp_path: Path) -> None:
    for root in (store, str(tmp_path / "local")):
        uri = layout.results_uri(layout.join(root, "eval"))
        with storage.open(uri, "w") as file:
            file.write('{"verdict": "Passed"}')
        with storage.open(uri) as file:
            assert file.read() == b'{"verdict": "Passed"}'
        assert storage.exists(uri)
        assert storage.delete(layout.join(root, "eval")) is True
        assert storage.delete(layout.join(root, "eval")) is False
        assert not storage.exists(uri)
    with pytest.raises(storage.StorageError, match=f"no object at {store}/nothing.json"), \
            storage.open(f"{store}/nothing.json"):
        pass


def test_an_unknown_scheme_is_named() -> None:
    with pytest.raises(storage.StorageError, match="cannot open nosuch://bucket/x"):
        storage.stage_in("nosuch://bucket/x", "dataset")
