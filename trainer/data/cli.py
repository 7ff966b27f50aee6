"""`llmops-data --config FILE`: run a Dataset's pipeline (what the operator's Job runs)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmops.trainer import termination
from llmops.trainer.config import exit_codes, layout
from llmops.trainer.config.data import DataJobConfig
from llmops.trainer.config.files import ConfigFileError, load_config
from llmops.trainer.config.result import WorkloadResult

from .engines import InlineEngine, RayEngine
from .pipeline import run
from .progress import Progress
from .sources import SourceError


def fail(message: str) -> int:
    """Report a cause the operator can show in a condition, and exit with "do not retry"."""
    return termination.fail("llmops-data", message, exit_codes.CONFIG_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops-data", description=__doc__)
    parser.add_argument("--config", required=True, help="DataJobConfig as JSON or YAML (the Dataset's spec)")
    parser.add_argument("--output", help="override outputUri")
    parser.add_argument("--engine", choices=("ray", "inline"), default="ray",
                        help="where per-document stages run (default: Ray Data)")
    args = parser.parse_args(argv)
    try:
        config = load_config(DataJobConfig, args.config, {"outputUri": args.output} if args.output else None)
    except ConfigFileError as error:
        return fail(str(error))
    engine = RayEngine(num_cpus=None) if args.engine == "ray" else InlineEngine()
    try:
        manifest = run(config, engine, Progress())
    except (SourceError, FileNotFoundError, ValueError) as error:
        return fail(str(error))
    print(f"llmops-data: kept {manifest.counts.kept} of {manifest.counts.read} documents, "
          f"{manifest.tokens.total} tokens -> {config.output_uri}", file=sys.stderr)
    # The operator copies these into Dataset.status (stats, tokenizerUri, artifactUri).
    termination.report(WorkloadResult(artifact_uri=config.output_uri, stats=manifest.stats(),
                                      tokenizer_uri=layout.join(config.output_uri, layout.TOKENIZER_FILE)))
    return exit_codes.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
