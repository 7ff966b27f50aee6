"""`llmops-artifacts --config FILE`: delete a deleted resource's artifacts (`output.retainArtifacts: false`).

The operator runs it as a Job with the resource's own storage credentials and volumes, because the operator
itself holds neither. Deleting something already gone succeeds, so a retried Job converges.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from llmops.trainer.config import exit_codes
from llmops.trainer.config.artifacts import ArtifactCleanupConfig, is_root
from llmops.trainer.config.files import ConfigFileError, load_config
from llmops.trainer.termination import fail


def delete(uri: str) -> bool:
    """Remove `uri` recursively; False when there was nothing to delete."""
    if "://" not in uri or uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        if not path.exists() and not path.is_symlink():
            return False
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    import fsspec

    filesystem, path = fsspec.core.url_to_fs(uri)
    if not filesystem.exists(path):
        return False
    filesystem.rm(path, recursive=True)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops-artifacts", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="ArtifactCleanupConfig as YAML or JSON")
    args = parser.parse_args(argv)
    try:
        config = load_config(ArtifactCleanupConfig, args.config)
    except ConfigFileError as error:
        return fail("llmops-artifacts", str(error), exit_codes.CONFIG_ERROR)
    for uri in config.uris:
        if is_root(uri):
            return fail("llmops-artifacts", f"refusing to delete {uri}: it is a filesystem root or a bucket",
                        exit_codes.CONFIG_ERROR)
    for uri in config.uris:
        try:
            deleted = delete(uri)
        except OSError as error:  # permissions, a flaky store: the Job's backoff retries
            return fail("llmops-artifacts", f"could not delete {uri}: {error}", 1)
        print(json.dumps({"event": "deleted" if deleted else "absent", "uri": uri}), flush=True)
    return exit_codes.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
