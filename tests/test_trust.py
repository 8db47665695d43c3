"""What a collection trusts: `info` names every model it runs and the store it writes to.

A SavedModel passed as a handle (or a towers folder) runs its graph, and a graph can read and
write files, so users must see which ones a collection uses before they search it.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from engine import Engine
from engine.cli import cli


def test_info_lists_the_models_and_the_store_a_collection_uses(tmp_path):
    home = tmp_path / "home"
    engine = Engine(home)
    store = tmp_path / "elsewhere.sqlite"
    engine.create("vecs", encoder="precomputed", options={"dim": 4}, store_url=f"sqlite:///{store}")
    assert engine.external_sources("vecs") == [
        {"kind": "store", "option": "store_url", "value": f"sqlite:///{store}"}
    ]
    # A text collection whose manifest names a SavedModel handle (as `-o handle=DIR` writes it).
    engine.create("faq", encoder="use-multilingual", index="flat")
    manifest = home / "faq" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["encoder"]["options"]["handle"] = "/models/someone-elses-use"
    manifest.write_text(json.dumps(data))
    assert engine.external_sources("faq") == [
        {"kind": "model", "option": "handle", "value": "/models/someone-elses-use"}
    ]
    result = CliRunner().invoke(cli, ["--home", str(home), "info", "faq"])
    assert result.exit_code == 0, result.output
    assert "external: model handle=/models/someone-elses-use" in result.output
    result = CliRunner().invoke(cli, ["--home", str(home), "info", "vecs", "--json"])
    assert json.loads(result.output)["external"][0]["value"] == f"sqlite:///{store}"
    # Bundled weights come from an installed package: nothing external to list.
    engine.create("plain", encoder="use-multilingual", index="flat")
    assert engine.external_sources("plain") == []
