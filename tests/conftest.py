"""Shared fixtures: the fake plugin installed as a real distribution, and fresh engines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "tests"))

from fakeplugin.install import install  # noqa: E402


@pytest.fixture(scope="session")
def fake_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the fake plugin's distribution, on sys.path and PYTHONPATH."""
    site = install(tmp_path_factory.mktemp("fake_site"))
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return site


@pytest.fixture
def registry(fake_site: Path):
    from engine.registry import Registry

    return Registry()


@pytest.fixture
def engine(tmp_path: Path, registry):
    from engine import Engine

    return Engine(tmp_path / "home", registry=registry, lock_timeout=2.0)


@pytest.fixture
def cli_run(tmp_path: Path, fake_site: Path):
    """`hubsearch ARGS` in this process on a fresh home; asserts exit 0 unless ``ok=False``."""
    from click.testing import CliRunner

    from engine.cli import cli

    home = tmp_path / "home"

    def invoke(*args: str, ok: bool = True):
        result = CliRunner().invoke(
            cli, ["--home", str(home), *args], catch_exceptions=False, prog_name="hubsearch"
        )
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke
