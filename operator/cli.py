"""The `llmops` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

NOT_BUILT_EXIT_CODE = 3


class NotBuiltYet(NotImplementedError):
    """A command whose implementation arrives with a later issue; says so instead of pretending."""


def _generate(args: argparse.Namespace) -> int:
    from .api.crds import stale_files, write_generated

    root = Path(args.root)
    if args.check:
        stale = stale_files(root)
        for path in stale:
            print(f"stale: {path} (run `llmops generate`)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_generated(root):
        print(f"wrote {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .api.admission import AdmissionError, admit, load_manifests

    failures = 0
    for file, manifest in load_manifests(Path(p) for p in args.filename):
        name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        try:
            admit(manifest)
        except AdmissionError as error:
            failures += 1
            print(f"{file}: {error}", file=sys.stderr)
        else:
            print(f"{file}: {name} valid")
    return 1 if failures else 0


def _operator_run(_: argparse.Namespace) -> int:
    from .runtime.main import run

    return run()


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    try:
        from llmops.trainer.serve.cli import add_options
    except ImportError:  # an install without the `serve` extra: `llmops serve` then says what is missing
        return
    add_options(parser)


def _serve(args: argparse.Namespace) -> int:
    try:
        from llmops.trainer.serve.cli import run
    except ImportError as error:
        print(f"llmops: the model server needs the `serve` extra (pip install 'llmops-operator[serve]'): {error}",
              file=sys.stderr)
        return NOT_BUILT_EXIT_CODE
    return run(args)


def _not_built(what: str) -> int:
    message = f"{what} is not built yet: it arrives with a later issue (see README, 'Status')."
    print(f"llmops: {NotBuiltYet(message)}", file=sys.stderr)
    return NOT_BUILT_EXIT_CODE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmops",
        description="Run the whole life of a language model from llmops.dev resources.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="write the CRDs, the chart's copy and the API reference")
    generate.add_argument("--root", default=".", help="repository root (default: current directory)")
    generate.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    generate.set_defaults(func=_generate)

    validate = commands.add_parser("validate", help="check manifests offline exactly as the API server would")
    validate.add_argument("-f", "--filename", action="append", required=True, help="file or directory")
    validate.set_defaults(func=_validate)

    run = commands.add_parser("run", help="run manifests on this machine (local mode)")
    run.add_argument("-f", "--filename", action="append", required=True, help="file or directory")
    run.set_defaults(func=lambda _: _not_built("local mode (`llmops run`)"))

    operator = commands.add_parser("operator", help="the Kubernetes operator")
    operator_commands = operator.add_subparsers(dest="operator_command", required=True, metavar="COMMAND")
    operator_commands.add_parser(
        "run", help="reconcile llmops.dev resources in a cluster (settings from LLMOPS_* variables)"
    ).set_defaults(func=_operator_run)

    serve = commands.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    serve.add_argument("model", help="Hugging Face-format model directory or fsspec URI")
    _add_serve_options(serve)
    serve.set_defaults(func=_serve)

    from .rollout_cli import add_parser as add_rollout_parser

    add_rollout_parser(commands)  # llmops rollout status|promote|abort|retry|undo
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
