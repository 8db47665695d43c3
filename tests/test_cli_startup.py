"""A successful command prints nothing on stderr but its own progress; TensorFlow's start-up
lines show with --verbose / HUBSEARCH_LOG=debug, and whenever TensorFlow is broken.

The fast tests put a stand-in `tensorflow` package first on the path: it writes to file
descriptor 2 the way the real one does (before any logging is set up) and can fail to import,
find no usable GPU, or abort. The slow test runs the real TensorFlow and the real encoder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: A line of TensorFlow's C++ logging: `E0000 00:00:17.. 123 cuda_platform.cc:52] ...`.
TF_LINE = re.compile(r"^[IWEF]\d{4} .*\.cc:\d+\] ", re.MULTILINE)

FAKE_TENSORFLOW = """
import os, types
os.write(2, b"I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\\n")
if os.environ.get("FAKE_TF") == "broken":
    os.write(2, b"F0000 00:00:1.0 1 loader.cc:7] libtensorflow_framework.so.2: bad ELF\\n")
    raise ImportError("libtensorflow_framework.so.2: cannot open shared object file")
if os.environ.get("FAKE_TF") == "abort":
    os.write(2, b"F0000 00:00:1.0 1 cpu_feature_guard.cc:9] needs AVX512, not found\\n")
    os.abort()

def list_physical_devices(kind=None):
    os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: ERR 303\\n")
    return []

__version__ = "0.0-fake"
config = types.SimpleNamespace(list_physical_devices=list_physical_devices)
test = types.SimpleNamespace(is_built_with_cuda=lambda: True)
"""


@pytest.fixture
def fake_tensorflow(tmp_path, fake_site):
    """Runs `hubsearch ARGS` in a process whose `tensorflow` is the stand-in."""
    (tmp_path / "faketf" / "tensorflow").mkdir(parents=True)
    (tmp_path / "faketf" / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    gpu = tmp_path / "dev" / "nvidia0"

    def run(*args: str, mode: str = "", gpu_present: bool = False, **env: str):
        code = (
            "import sys, engine.cli_startup as s; "
            f"s.NVIDIA_DEVICES = {str(gpu) if gpu_present else str(tmp_path / 'none*')!r}; "
            "from engine.cli import cli; cli(sys.argv[1:], prog_name='hubsearch')"
        )
        environ = {
            **_clean_env(),
            "PYTHONPATH": os.pathsep.join([str(tmp_path / "faketf"), os.environ["PYTHONPATH"]]),
            "HUBSEARCH_HOME": str(tmp_path / "home"),
            "FAKE_TF": mode,
            **env,
        }
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ
        )

    gpu.parent.mkdir()
    gpu.touch()
    return run


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBSEARCH_", "TF_CPP"))}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


CREATE = ("create", "faq", "--encoder", "use-multilingual")
TF_VERSION = ("fake", "tf-version")  # a plugin command that starts TensorFlow


def test_no_gpu_is_normal_and_silent(fake_tensorflow):
    result = fake_tensorflow(*TF_VERSION)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0.0-fake\n" and result.stderr == ""


def test_verbose_and_hubsearch_log_show_tensorflow_start_up(fake_tensorflow):
    verbose = fake_tensorflow("--verbose", *TF_VERSION).stderr
    assert "cudart_stub.cc:31] Could not find cuda drivers" in verbose and "cuInit" in verbose
    logged = fake_tensorflow(*TF_VERSION, HUBSEARCH_LOG="debug").stderr
    assert TF_LINE.findall(logged) == TF_LINE.findall(verbose)


def test_a_broken_tensorflow_shows_its_own_message_and_stores_nothing(fake_tensorflow):
    # Creating a collection needs no TensorFlow for this encoder, so it is not even imported.
    created = fake_tensorflow(*CREATE, mode="broken")
    assert created.returncode == 0 and created.stderr == ""
    result = fake_tensorflow("add", "faq", str(REPO / "examples" / "faq.jsonl"), mode="broken")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "loader.cc:7] libtensorflow_framework.so.2: bad ELF" in lines[-2]
    assert lines[-1] == (
        "Error: TensorFlow failed to import: ImportError: "
        "libtensorflow_framework.so.2: cannot open shared object file"
    )
    assert '"count": 0' in fake_tensorflow("info", "faq", "--json", mode="broken").stdout


def test_gpus_present_but_unusable_are_reported_and_the_command_goes_on(fake_tensorflow):
    result = fake_tensorflow(*TF_VERSION, gpu_present=True)
    assert result.returncode == 0 and result.stdout == "0.0-fake\n"
    assert "cuda_platform.cc:52] failed call to cuInit" in result.stderr
    assert "warning: this machine has NVIDIA GPUs but TensorFlow cannot use them" in (result.stderr)
    hidden = fake_tensorflow(*TF_VERSION, gpu_present=True, CUDA_VISIBLE_DEVICES="-1")
    assert hidden.returncode == 0 and hidden.stderr == ""


def test_a_crash_while_tensorflow_starts_is_not_silent(fake_tensorflow):
    result = fake_tensorflow(*TF_VERSION, mode="abort")
    assert result.returncode != 0
    assert "Fatal Python error: Aborted" in result.stderr
    assert "tensorflow/__init__.py" in result.stderr


def test_commands_without_tensorflow_never_import_it(fake_tensorflow):
    result = fake_tensorflow("create", "vecs", "--encoder", "fake-hash", mode="broken")
    assert result.returncode == 0 and result.stderr == ""
    result = fake_tensorflow("fake", "embed", "hello", mode="broken")
    assert result.returncode == 0 and result.stderr == ""


@pytest.mark.slow
def test_create_add_search_with_the_real_encoder_print_nothing_on_stderr(tmp_path, fake_site):
    env = {**_clean_env(), "HUBSEARCH_HOME": str(tmp_path / "home")}

    def hubsearch(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            capture_output=True, text=True, env=env, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result

    for args in (CREATE, ("add", "faq", "examples/faq.jsonl")):
        assert hubsearch(*args).stderr == ""
    found = hubsearch("search", "faq", "Ich habe mein Passwort vergessen", "-k", "1")
    assert found.stderr == "" and "password" in found.stdout
    more = tmp_path / "more.jsonl"
    more.write_text("".join(f'{{"id": "m{i}", "text": "note {i}"}}\n' for i in range(3)))
    progress = hubsearch("add", "faq", str(more), "--progress").stderr
    assert "encoding: 100%" in progress and not TF_LINE.search(progress)  # the bar alone
    verbose = hubsearch("--verbose", "search", "faq", "PIN vergessen", "-k", "1").stderr
    assert TF_LINE.search(verbose), verbose
