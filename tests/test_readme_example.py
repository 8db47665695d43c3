"""The README's first command, as written: a German question finds the entry written in Chinese."""

from __future__ import annotations

import json
import re
import shlex

from click.testing import CliRunner
from conftest import REPO

from engine.cli import cli


def readme_quickstart() -> list[list[str]]:
    """The hubsearch steps of the README's first shell block, split into argument lists."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    steps = [s.strip() for s in block.replace("\n", " ").split("&&")]
    return [shlex.split(s)[1:] for s in steps if s.startswith("hubsearch ")]


def test_readme_first_command_shows_a_cross_lingual_hit(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    steps = readme_quickstart()
    assert [s[0] for s in steps] == ["create", "add", "search"]
    runner = CliRunner()
    for args in steps[:-1]:
        result = runner.invoke(cli, ["--home", str(tmp_path), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["--home", str(tmp_path), *steps[-1], "--json"])
    hits = [json.loads(line) for line in result.output.splitlines()]
    top = hits[0]
    assert top["id"] == "password-forgot" and top["metadata"]["lang"] == "zh-CN"
    assert steps[-1][2].startswith("Ich habe")  # the question is German
    # the default search is hybrid: the answer must lead by meaning, and the German entries
    # sharing "ich" and "mein" with the question must not outrank it
    assert top["similarity"] > hits[1]["similarity"] + 0.1
    assert top["score"] > hits[1]["score"]
