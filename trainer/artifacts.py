"""`llmops-artifacts --config FILE`: delete a deleted resource's artifacts (`output.retainArtifacts: false`).

The operator runs it as a Job with the resource's own storage credentials and volumes, because the operator
itself holds neither. Deleting something already gone succeeds, so a retried Job converges.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from llmops.trainer import storage
from llmops.trainer.config import exit_codes
from llmops.trainer.config.artifacts import ArtifactCleanupConfig, is_root
from llmops.trainer.config.files import ConfigFileError, load_config
from llmops.trainer.termination import fail


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
            deleted = storage.delete(uri)
        except (OSError, storage.StorageError) as error:  # permissions, a flaky store: the Job's backoff retries
            return fail("llmops-artifacts", f"could not delete {uri}: {error}", 1)
        print(json.dumps({"event": "deleted" if deleted else "absent", "uri": uri}), flush=True)
    return exit_codes.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
