"""The Dockerfiles follow the rules we can check without a Docker engine (none runs on our machines).

Multi-stage, base images pinned to an exact version, a non-root numeric user in the final stage, COPY
sources that exist, and only extras that pyproject.toml defines.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_the_three_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["operator.Dockerfile", "server.Dockerfile", "trainer.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_with_pinned_bases(path: Path) -> None:
    steps = instructions(path)
    args = dict(re.match(r"(\w+)=(\S+)", arg).groups() for op, arg in steps if op == "ARG" and "=" in arg)
    bases = [arg.split()[0] for op, arg in steps if op == "FROM"]
    assert len(bases) >= 2, "build and runtime stages"
    for base in bases:
        image = args.get(base.strip("${}"), base)
        assert re.search(r":\d+\.\d+\.\d+", image), f"{image} is not pinned to an exact version"
        assert "latest" not in image


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_numeric_non_root_user(path: Path) -> None:
    steps = instructions(path)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    users = [arg for op, arg in steps[last_from:] if op == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_extras_are_defined(path: Path) -> None:
    for op, arg in instructions(path):
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        for extra in re.findall(r'"\.\[(\w+)\]"', arg):
            assert extra in EXTRAS, f"extra {extra!r} is not defined in pyproject.toml"
