"""Local mode shows what a Dataset's run reported, as a cluster does: `llmops run -f` then `llmops get dataset`.

The data workload is stood in for by a script that writes what `llmops-data` writes on the result channel (the
termination-message file), so this test runs the real runner, local backend, reconcile and `get` in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from llmops.operator import cli
from llmops.operator.backends import local
from llmops.trainer.config.manifest import DatasetStats
from llmops.trainer.config.result import TERMINATION_LOG_ENV, WorkloadResult
from tests.conftest import example

STATS = DatasetStats(documents_read=1500, documents_kept=1234, tokens=56789, vocab_size=2048)

FAKE_DATA_WORKLOAD = f"""#!{sys.executable}
# Stands in for llmops-data: writes an output folder and the result the real one reports.
import json, os, sys
from pathlib import Path

config = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
out = Path(config["outputUri"])
(out / "shards").mkdir(parents=True, exist_ok=True)
(out / "tokenizer.json").write_text("{{}}")
(out / "manifest.json").write_text("{{}}")
result = {WorkloadResult(stats=STATS).to_wire()!r}
result.update(artifactUri=str(out), tokenizerUri=str(out / "tokenizer.json"))
Path(os.environ["{TERMINATION_LOG_ENV}"]).write_text(json.dumps(result))
"""


def test_llmops_get_dataset_shows_the_documents_and_tokens_the_run_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "fake-llmops-data"
    script.write_text(FAKE_DATA_WORKLOAD)
    script.chmod(0o755)
    real = local.executable
    monkeypatch.setattr(local, "executable", lambda name: str(script) if name == "llmops-data" else real(name))
    manifest = tmp_path / "dataset.yaml"
    manifest.write_text(yaml.safe_dump(example("Dataset")))
    store = tmp_path / "store"

    assert cli.main(["run", "-f", str(manifest), "--store", str(store)]) == 0
    capsys.readouterr()
    assert cli.main(["get", "dataset", "--store", str(store)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["NAME", "PHASE", "PROGRESS", "DOCUMENTS", "TOKENS"]
    cell = {name: row[header.index(name):].split()[0] for name in ("NAME", "PHASE", "DOCUMENTS", "TOKENS")}
    assert cell == {"NAME": "shakespeare", "PHASE": "Succeeded", "DOCUMENTS": "1234", "TOKENS": "56789"}

    saved = yaml.safe_load((store / "resources" / "dataset" / "shakespeare.yaml").read_text())["status"]
    out = Path(saved["artifactUri"])
    assert saved["stats"]["vocabSize"] == 2048 and saved["tokenizerUri"] == str(out / "tokenizer.json")
