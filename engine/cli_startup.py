"""Quiet start-up for the command line: TensorFlow is imported before a command prints anything.

TensorFlow 2.21 writes its start-up lines (absl's "log messages before InitializeLog", the CUDA
probe, a cuInit "E" line on a machine that simply has no GPU) straight to file descriptor 2
before its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. A command
that will run TensorFlow therefore imports it here first (:func:`start_tensorflow`), with fd 2
pointed at a temporary file, and replays what was captured only when something is wrong:
TensorFlow failed to import, or NVIDIA devices are present but TensorFlow cannot use them.
``--verbose`` / ``HUBSEARCH_LOG=debug`` capture nothing. The import happens before the
command's own output starts, so a progress bar (tqdm writes to stderr) is never swallowed.
`create`, which needs TensorFlow only for an encoder that must load its model to learn its
width, wraps that step in :func:`tensorflow_quietly` instead of paying for the import always.

This belongs to the CLI alone. File descriptor 2 is the whole process's: the library, where an
embedding backend or a server imports TensorFlow lazily from a request thread while other
threads write to stderr, never redirects it.
"""

from __future__ import annotations

import faulthandler
import glob
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import click

from engine.errors import PluginLoadError

VERBOSE = "hubsearch.verbose"  # key in the click context's meta
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
#: Device nodes of NVIDIA GPUs; with none, a failing cuInit is the normal, silent case.
NVIDIA_DEVICES = "/dev/nvidia[0-9]*"


def configure(ctx: click.Context, verbose: bool) -> None:
    """Decide once per run, in the group's callback, whether start-up messages are shown."""
    level = logging.DEBUG if verbose else LEVELS.get(os.environ.get("HUBSEARCH_LOG", "").lower())
    ctx.meta[VERBOSE] = level is not None
    if level is None:
        # Later TensorFlow messages (after its logging is initialised) obey this: errors only.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for name in ("engine", "indexes", "plugins"):
        logging.getLogger(name).setLevel(level)


def is_verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is not None and VERBOSE in ctx.meta:
        return bool(ctx.meta[VERBOSE])
    return os.environ.get("HUBSEARCH_LOG", "").lower() in LEVELS


def prepare_encoder(encoder: Any) -> None:
    """Start TensorFlow now if ``encoder`` will use it (its class says so)."""
    if getattr(encoder, "uses_tensorflow", False):
        start_tensorflow()


def start_tensorflow() -> None:
    """Import TensorFlow quietly; show its own messages only if it is broken.

    Plugin commands that run TensorFlow call this first thing in their callback. A failed
    import raises :class:`PluginLoadError` after TensorFlow's own messages.
    """
    try:
        with tensorflow_quietly():
            import tensorflow  # noqa: F401
    except Exception as exc:  # a broken install fails in many ways; each is the same to the user
        line = traceback.format_exception_only(type(exc), exc)[-1].strip()
        raise PluginLoadError(f"TensorFlow failed to import: {line}") from None


@contextmanager
def tensorflow_quietly() -> Iterator[None]:
    """Hold back what TensorFlow prints if it starts inside this block (which must print
    nothing to stderr itself): shown when the block fails, or with a warning when NVIDIA GPUs
    are present but unusable (the command then goes on, on the CPU). Idempotent."""
    if "tensorflow" in sys.modules:
        yield
        return
    capture = None if is_verbose() else _Fd2Capture()
    try:
        with capture or nullcontext():
            yield
            gpus_broken = "tensorflow" in sys.modules and _gpus_broken()
    except Exception:
        _replay(capture)
        raise
    if gpus_broken:
        _replay(capture)
        click.echo(
            "warning: this machine has NVIDIA GPUs but TensorFlow cannot use them (its messages "
            "are above); running on the CPU. CUDA_VISIBLE_DEVICES=-1 hides them.",
            err=True,
        )


def _replay(capture: _Fd2Capture | None) -> None:
    if capture is not None:
        click.echo(capture.text, err=True, nl=False)


def _gpus_broken() -> bool:
    """NVIDIA devices are present and not hidden, TensorFlow is built for CUDA, yet sees none."""
    import tensorflow as tf

    # Listing the GPUs runs cuInit now, inside the capture, instead of at the first op.
    if tf.config.list_physical_devices("GPU"):
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False  # hidden on purpose
    return bool(glob.glob(NVIDIA_DEVICES)) and tf.test.is_built_with_cuda()


class _Fd2Capture:
    """Points file descriptor 2 at a temporary file; ``text`` holds what was written there.

    A fatal crash inside (TensorFlow aborting on a CPU it was not built for) would otherwise
    die silently, so faulthandler reports it on the real stderr meanwhile.
    """

    text = ""

    def __enter__(self) -> _Fd2Capture:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._log = tempfile.TemporaryFile()
        self._crash = None
        if not faulthandler.is_enabled():
            self._crash = os.fdopen(os.dup(self._saved), "w")
            faulthandler.enable(file=self._crash)
        os.dup2(self._log.fileno(), 2)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            sys.stderr.flush()  # Python-level writes made meanwhile belong to the capture
        finally:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            if self._crash is not None:
                faulthandler.disable()
                self._crash.close()
            self._log.seek(0)
            self.text = self._log.read().decode("utf-8", "replace")
            self._log.close()
