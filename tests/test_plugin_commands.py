"""Plugin commands: `hubsearch.commands` entry points, listed cheaply, loaded on demand, and
never able to break the CLI. `towers` (built in) and the fake plugin's `fake` (third party) take
the same road."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from engine.cli import cli

#: What `hubsearch --help` must not import: TensorFlow, FAISS, and the plugins' heavy modules
#: (clip-towers training, the fake plugin's encoder module standing in for a model).
HEAVY = (
    "tensorflow",
    "tensorflow_hub",
    "tensorflow_text",
    "keras",
    "faiss",
    "plugins.clip_towers.train",
    "plugins.clip_towers.fit",
    "plugins.clip_towers.backbones",
    "plugins.clip_towers.features",
    "hubsearch_fake",
    "fastapi",
    "uvicorn",
)


@pytest.fixture
def hubsearch(tmp_path, fake_site):
    home = tmp_path / "home"

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--home", str(home), *args], prog_name="hubsearch")

    return invoke


def test_help_lists_plugin_commands_without_importing_their_heavy_modules(fake_site):
    code = (
        "import sys; from click.testing import CliRunner; from engine.cli import cli;"
        "r = CliRunner().invoke(cli, ['--help'], prog_name='hubsearch');"
        "assert r.exit_code == 0, r.output; print(r.output);"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules));"
        "print('LIGHT', sorted(m for m in ('plugins.clip_towers.cli', 'hubsearch_fake_cli')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    commands = {
        line.split()[0]: line.split(None, 1)[1]
        for line in out.split("Commands:")[1].splitlines()
        if line.startswith("  ") and len(line.split()) > 1
    }
    assert commands["towers"].startswith("Cross-modal towers for the clip-towers encoder")
    assert commands["fake"].startswith("Tools of the fake-hash encoder")
    assert commands["broken-command"].startswith("BROKEN: command 'broken-command' failed")
    assert commands["add"].startswith("Add (or update, by id) documents")  # built-in wins
    assert "HEAVY []" in out
    # The help lines came from the plugins' light command modules, imported for them.
    assert "LIGHT ['hubsearch_fake_cli', 'plugins.clip_towers.cli']" in out


def test_third_party_command_runs_with_the_home_the_user_chose(hubsearch, tmp_path):
    kb = tmp_path / "kb.jsonl"
    kb.write_text('{"id": "a", "text": "reset my pin"}\n{"id": "b", "text": "lost card"}\n')
    assert hubsearch("create", "faq", "--encoder", "fake-hash").exit_code == 0
    assert hubsearch("add", "faq", str(kb)).exit_code == 0
    result = hubsearch("fake", "count", "faq")
    assert result.exit_code == 0 and result.output == "2\n"
    vector = json.loads(hubsearch("fake", "embed", "reset my pin", "--dim", "8").output)
    assert len(vector) == 8 and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-5)
    assert hubsearch("fake", "count", "nope").output.strip() == (
        f"Error: no collection named 'nope' in {tmp_path / 'home'}"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("broken-command", "command 'broken-command' failed to load: ModuleNotFoundError: "
         "No module named 'hubsearch_fake_missing_module'"),
        ("not-a-command", "command 'not-a-command' failed to load: TypeError: "
         "str is not a click command or group"),
    ],
)  # fmt: skip
def test_a_broken_command_plugin_fails_alone_with_one_line(hubsearch, name, message):
    result = hubsearch(name, "anything", "--with-options")
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {message}"
    assert hubsearch("list").exit_code == 0  # the rest of the CLI is unaffected


def test_plugins_lists_commands_broken_and_shadowed_ones_included(hubsearch):
    rows = [json.loads(x) for x in hubsearch("plugins", "--json").output.splitlines()]
    commands = {r["name"]: r for r in rows if r["group"] == "hubsearch.commands"}
    assert commands["towers"]["loads"] and commands["towers"]["distribution"].startswith(
        "hubsearch "
    )
    assert commands["fake"]["loads"] and commands["fake"]["entry_point"] == (
        "hubsearch_fake_cli:fake"
    )
    assert not commands["broken-command"]["loads"]
    assert "hubsearch_fake_missing_module" in commands["broken-command"]["error"]
    assert not commands["not-a-command"]["loads"]
    assert "shadowed by the built-in command" in commands["add"]["error"]
    assert hubsearch("add", "--help").output.startswith("Usage: hubsearch add [OPTIONS] NAME")


def test_towers_is_reached_through_its_entry_point(hubsearch):
    result = hubsearch("towers", "eval", "--help")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: hubsearch towers eval [OPTIONS] DIR PAIRS")
