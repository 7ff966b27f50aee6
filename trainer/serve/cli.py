"""`llmops-serve --model DIR [--config FILE] [--host] [--port] [--api-key-file]` (and `llmops serve DIR`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from llmops.trainer.config import layout
from llmops.trainer.config.exit_codes import CONFIG_ERROR
from llmops.trainer.config.serve import ServerConfig


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `llmops-serve` and `llmops serve` (which takes the model as a positional)."""
    parser.add_argument("--config", type=Path, help="ServerConfig as YAML or JSON (camelCase, as in the CRD)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, help="port (default: the config's, 8000)")
    parser.add_argument("--api-key-file", type=Path,
                        help="file holding the API key clients must send as `Authorization: Bearer KEY`")
    parser.add_argument("--served-model-name", help="model name clients send (default: the directory's name)")
    parser.add_argument("--cache-dir", type=Path, help="where remote models are copied (default ~/.cache/llmops)")


def run(args: argparse.Namespace) -> int:
    from .loader import ModelLoadError, check_files, localize

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        data = yaml.safe_load(args.config.read_text()) if args.config else {}
        config = ServerConfig.model_validate(data or {})
        if args.served_model_name:
            config = config.model_copy(update={"served_model_name": args.served_model_name})
        api_key = None
        if args.api_key_file:
            api_key = args.api_key_file.read_text().strip()
            if not api_key:
                raise ValueError(f"API key file {args.api_key_file} is empty")
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as error:
        print(f"llmops-serve: {error}", file=sys.stderr)
        return CONFIG_ERROR
    if layout.is_local(str(args.model)):  # a local model: say what is missing before listening at all
        try:
            check_files(localize(str(args.model)))
        except ModelLoadError as error:
            print(f"llmops-serve: {error}", file=sys.stderr)
            return CONFIG_ERROR
    from .server import Server  # aiohttp and prometheus: only once the arguments are known to be good

    server = Server(config, str(args.model), host=args.host, port=args.port, api_key=api_key,
                    cache_dir=args.cache_dir)

    def listening(url: str) -> None:
        print(f"llmops-serve: serving {server.model_name!r} at {url} (ready when /readyz answers 200)", flush=True)

    return asyncio.run(server.serve(listening))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmops-serve", description="OpenAI-compatible model server")
    parser.add_argument("--model", required=True, help="Hugging Face-format model directory or fsspec URI")
    add_options(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
