"""Install the fake plugin as a real distribution (dist-info + entry points) into a folder.

Putting that folder on ``sys.path`` / ``PYTHONPATH`` makes hubsearch discover the plugin through
``importlib.metadata`` exactly as it would discover a pip-installed third-party package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).parent

ENTRY_POINTS = """\
[hubsearch.encoders]
fake-hash = hubsearch_fake:HashEncoder
fake-pixels = hubsearch_fake:PixelEncoder
fake-folder = hubsearch_fake:FolderEncoder
broken-encoder = hubsearch_fake_missing_module:Encoder

[hubsearch.commands]
fake = hubsearch_fake_cli:fake
broken-command = hubsearch_fake_missing_module:cli
not-a-command = hubsearch_fake_cli:VERSION
add = hubsearch_fake_cli:fake
"""

MODULES = ("hubsearch_fake.py", "hubsearch_fake_cli.py")


def install(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for module in MODULES:
        shutil.copy(HERE / module, target / module)
    dist = target / "hubsearch_fake-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hubsearch-fake\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    (dist / "RECORD").write_text("")
    return target
