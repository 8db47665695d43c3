"""`hubsearch serve` without the serve extra: one line saying what to install."""

from __future__ import annotations

import subprocess
import sys


def test_serve_without_the_extra_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None;"
        "from engine.cli import main; sys.argv = ['hubsearch', '--home', sys.argv[1], 'serve'];"
        "main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: hubsearch serve needs the serve extra: pip install 'hubsearch[serve]'"
    ]


def test_the_client_needs_no_server_packages():
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None;"
        "sys.modules['httpx'] = None; sys.modules['starlette'] = None;"
        "from engine import RemoteEngine; RemoteEngine('http://127.0.0.1:1')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
