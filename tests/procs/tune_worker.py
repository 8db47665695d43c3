"""Child process for the tune crash test: tunes a collection and is killed inside the commit.

Usage: tune_worker.py HOME NAME POINT [full], POINT one of: head-saved (the head file is
written, the index not yet built; with ``full`` the tuned vector log and weights are written
too), in-snapshot (the new index's snapshot is being written), before-rename (everything is
written but the manifest), after-rename (the manifest is renamed, nothing after). ``full``:
`tune(full=True)`, a short stage 2 forced to keep its weights.
"""

from __future__ import annotations

import os
import signal
import sys


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    home, name, point = sys.argv[1], sys.argv[2], sys.argv[3]
    import engine.commit as commit
    from engine import Engine
    from engine.tune.head import Head

    if point == "head-saved":
        save = Head.save

        def saved_then_die(self, folder):
            save(self, folder)
            die()

        Head.save = saved_then_die
    elif point == "in-snapshot":

        def half_snapshot(self, index, gen, **_):
            path = commit.snapshot_path(self.folder, gen)
            path.with_name(f".{path.name}.tmp").write_bytes(b"\0" * 4096)
            die()

        commit.Writer._save_snapshot = half_snapshot
    else:
        write = commit.write_manifest

        def write_and_die(folder, manifest):
            if point == "after-rename":
                write(folder, manifest)
            die()

        commit.write_manifest = write_and_die
    if sys.argv[4:] == ["full"]:
        from engine.tune.full import FullConfig
        from engine.tune.train import TuneConfig

        Engine(home).open(name).tune(
            label_field="intent",
            seed=0,
            full=True,
            force=True,
            config=TuneConfig(epochs=1, min_steps=2),
            full_config=FullConfig(epochs=2, min_steps=10, patience=5),
        )
    else:
        Engine(home).open(name).tune(label_field="intent", seed=0)
    print("NOT KILLED", flush=True)


if __name__ == "__main__":
    main()
