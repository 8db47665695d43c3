"""A real `hubsearch serve` process for tests: started on a free port, ready when /readyz is."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ServerProcess:
    def __init__(self, home: Path, *args: str, ca: str | None = None, ready_s: float = 120) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "--home",
                str(home),
                "serve",
                "--port",
                "0",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.startup = self._read_startup()
        self.url = self.startup.split("listening on ")[1].split()[0]
        threading.Thread(target=self._drain, daemon=True).start()
        self.ssl = ssl.create_default_context(cafile=ca) if ca else None
        self._wait_ready(ready_s)

    def _read_startup(self) -> str:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "listening on" in line:
                return line
        raise RuntimeError("server exited before listening:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", context=self.ssl) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.lines))
            time.sleep(0.1)
        raise RuntimeError("server not ready in time:\n" + "".join(self.lines))

    def access_log(self) -> list[dict]:
        return [json.loads(x) for x in self.lines if x.startswith("{")]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)
