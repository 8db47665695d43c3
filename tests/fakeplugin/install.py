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
broken-encoder = hubsearch_fake_missing_module:Encoder
"""


def install(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "hubsearch_fake.py", target / "hubsearch_fake.py")
    dist = target / "hubsearch_fake-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hubsearch-fake\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    (dist / "RECORD").write_text("")
    return target
