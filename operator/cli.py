"""The `llmops` command line."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

NOT_BUILT_EXIT_CODE = 3


def _generate(args: argparse.Namespace) -> int:
    from .api.generated import stale_files, write_generated

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


DEFAULT_STORE = ".llmops"


def _add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=Path(DEFAULT_STORE),
                        help=f"the local store: statuses, events, runs and artifacts (default: ./{DEFAULT_STORE})")


def _run(args: argparse.Namespace) -> int:
    from .local.display import Display
    from .local.inspect import load_resources
    from .local.runner import Runner, RunOptions

    options = RunOptions(paths=[Path(p) for p in args.filename], store=args.store, dry_run=args.dry_run,
                         force=set(args.force), serve=args.serve, prompt=args.prompt,
                         artifact_root=args.artifact_root)
    with Display() as display:
        code = Runner(options, display).execute()
        if not args.dry_run and args.store.exists():
            display.finish(load_resources(args.store), args.store)
    return code


def _get(args: argparse.Namespace) -> int:
    import yaml

    from .local.inspect import find, get_table, load_resources

    resources = load_resources(args.store)
    try:
        if args.name:
            resources = [find(resources, f"{args.kind}/{args.name}")]
        if args.output == "yaml":
            print(yaml.safe_dump_all(resources, sort_keys=False), end="")
        else:
            print(get_table(resources, args.kind, wide=args.output == "wide"))
    except ValueError as error:
        print(f"llmops get: {error}", file=sys.stderr)
        return 1
    return 0


def _describe(args: argparse.Namespace) -> int:
    from .local.inspect import describe, find, load_events, load_resources

    try:
        resource = find(load_resources(args.store), args.name)
    except ValueError as error:
        print(f"llmops describe: {error}", file=sys.stderr)
        return 1
    print(describe(resource, load_events(args.store, resource["kind"], resource["metadata"]["name"])))
    return 0


def _operator_run(_: argparse.Namespace) -> int:
    from .runtime.main import run

    return run()


def _serve(args: argparse.Namespace) -> int:
    """Hand over to the model server's own entry point (a separate process image, as `kubectl` plugins are): the
    CLI stays above the workloads and imports none of them."""
    server = Path(sys.executable).with_name("llmops-serve")
    if not server.exists():
        server = Path(shutil.which("llmops-serve") or server)
    if not server.exists():
        print("llmops: the model server needs the `serve` extra (pip install 'llmops-operator[serve]'): "
              "llmops-serve is not installed", file=sys.stderr)
        return NOT_BUILT_EXIT_CODE
    os.execv(server, [str(server), "--model", args.model, *args.options])
    return 0  # not reached: execv replaces this process


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

    run = commands.add_parser("run", help="run manifests on this machine (local mode), as a cluster would")
    run.add_argument("-f", "--filename", action="append", required=True, help="file or directory (repeatable)")
    _add_store_option(run)
    run.add_argument("--dry-run", action="store_true", help="print the plan (order, waits, what would run) and stop")
    run.add_argument("--force", action="append", default=[], metavar="NAME",
                     help="run this resource again even if nothing changed (NAME or KIND/NAME; repeatable)")
    run.add_argument("--serve", action="store_true", help="keep the Deployment's model server up until Ctrl-C")
    run.add_argument("--prompt", help="the smoke completion's prompt (default: a line from the examples)")
    run.add_argument("--artifact-root", metavar="URI",
                     help="where outputs go when a spec names none: a folder or fsspec URI (default: STORE/artifacts)")
    run.set_defaults(func=_run)

    get = commands.add_parser("get", help="list the resources of the local store, as kubectl get does")
    get.add_argument("kind", nargs="?", help="kind, plural or short name (default: all)")
    get.add_argument("name", nargs="?", help="one resource's name")
    get.add_argument("-o", "--output", choices=["table", "wide", "yaml"], default="table")
    _add_store_option(get)
    get.set_defaults(func=_get)

    describe = commands.add_parser("describe", help="one resource of the local store in full, with its Events")
    describe.add_argument("name", help="NAME or KIND/NAME")
    _add_store_option(describe)
    describe.set_defaults(func=_describe)

    operator = commands.add_parser("operator", help="the Kubernetes operator")
    operator_commands = operator.add_subparsers(dest="operator_command", required=True, metavar="COMMAND")
    operator_commands.add_parser(
        "run", help="reconcile llmops.dev resources in a cluster (settings from LLMOPS_* variables)"
    ).set_defaults(func=_operator_run)

    serve = commands.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    serve.add_argument("model", help="Hugging Face-format model directory or fsspec URI")
    serve.add_argument("options", nargs=argparse.REMAINDER, help="options of llmops-serve (llmops-serve --help)")
    serve.set_defaults(func=_serve)

    from .rollout_cli import add_parser as add_rollout_parser

    add_rollout_parser(commands)  # llmops rollout status|promote|abort|retry|undo
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
