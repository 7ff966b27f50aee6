"""`llmops-evaluate --config FILE`: score a model and write results.json with the verdict.

A Failed verdict is a result, not an error: the process exits 0 and the operator reads the verdict. A spec
that cannot work (bad data, an unloadable model, a missing bucket or object, a task an endpoint cannot score,
an endpoint that refuses the model name or key) exits 78, which the Job does not retry; an endpoint still
unreachable after the retries exits 1, which it does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmops.trainer import storage, termination
from llmops.trainer.config import exit_codes
from llmops.trainer.config.evaluate import EvalJobConfig
from llmops.trainer.config.files import ConfigFileError, load_config
from llmops.trainer.config.result import WorkloadResult
from llmops.trainer.data.progress import Progress
from llmops.trainer.model_files import ModelLoadError

from .endpoint import EndpointError, UnsupportedTask
from .run import evaluate
from .tasks import TaskDataError

UNAVAILABLE = 1
"""The endpoint stayed unreachable or overloaded: any exit code but the do-not-retry ones lets the Job retry."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="EvalJobConfig as YAML or JSON")
    args = parser.parse_args(argv)
    try:
        document = evaluate(load_config(EvalJobConfig, args.config), Progress())
    except EndpointError as error:
        return termination.fail("llmops-evaluate", str(error),
                                exit_codes.CONFIG_ERROR if error.permanent else UNAVAILABLE)
    except (OSError, storage.StorageError, ConfigFileError, TaskDataError, ModelLoadError, NotImplementedError,
            UnsupportedTask) as error:
        return termination.fail("llmops-evaluate", str(error), exit_codes.CONFIG_ERROR)
    termination.report(WorkloadResult(verdict=document["verdict"], results=document["results"]))
    print(f"llmops-evaluate: {document['verdict']}", file=sys.stderr)
    for result in document["results"]:
        print(f"  {result['task']}/{result['metric']} = {result['value']:.6g} {result.get('threshold', '')}",
              file=sys.stderr)
    return exit_codes.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
