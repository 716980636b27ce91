"""One agile session in a fresh process, for the concurrency and property tests (tests/test_agile_sessions.py).

    python tests/agile_child.py index DB FOLDER [--kill files:K|save|saving] [--wait-for-go] [--retry-busy]
    python tests/agile_child.py label DB CSV [--kill stored:N] [--wait-for-go] [--retry-busy]
    python tests/agile_child.py read DB                      # searches until stdin closes; prints how many

Commands run through the command line (``avex_hub.cli.main``), as a user runs them; its exit code is this
process's. ``--kill`` ends the process with SIGKILL at a chosen point (no clean-up runs, as when a machine loses
power or a job is killed): ``files:K`` after K files were embedded into the archive and before they were committed,
``save`` after the SQLite commit and before the vector index is written, ``saving`` halfway through writing it,
``stored:N`` after N labels were stored and before they were committed. ``--wait-for-go`` prints ``ready`` and
waits for a line on stdin (so several children start their work together); ``--retry-busy`` runs the command again
while it exits 4 (another writer holds the archive), as a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "beats-tiny"
BUSY = 4


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(kill: str | None) -> None:
    if not kill:
        return
    point, _, count = kill.partition(":")
    if point == "files":
        import avex_hub.integrations.agile.index as index

        real = index.iter_file_results

        def embedded_then_killed(*args, **kwargs):
            for i, result in enumerate(real(*args, **kwargs)):
                if i == int(count):
                    _die()
                yield result

        index.iter_file_results = embedded_then_killed
    elif point in ("save", "saving"):
        from usearch.index import Index

        def save(self, path_or_buffer=None, progress=None):
            if point == "saving":
                with open(path_or_buffer if path_or_buffer is not None else self.path, "wb") as handle:
                    handle.write(b"\0" * 64)
            _die()

        Index.save = save
    elif point == "stored":
        import avex_hub.integrations.agile.labels as labels

        real_store, stored = labels._store, [0]

        def store(*args, **kwargs):
            if stored[0] == int(count):
                _die()
            stored[0] += 1
            return real_store(*args, **kwargs)

        labels._store = store
    else:
        raise SystemExit(f"unknown --kill {kill!r}")


def _read(db: str) -> int:
    """Search the archive until stdin closes; every search must return windows the tables hold."""
    import threading

    import numpy as np

    from avex_hub.integrations import agile

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    searches = 0
    while not stop.is_set() or searches < 3:
        archive = agile.Archive.open(db, readonly=True)
        table = archive.window_table()
        if len(table["window_id"]):
            hits = agile.search_vectors(archive, archive.vectors(table["window_id"][:1])[0], top=5, exact=True)
            found = archive.window_table([h.window_id for h in hits], missing="skip")
            assert len(found["window_id"]) == len(hits) and np.all(np.isfinite([h.score for h in hits]))
        archive.close()
        searches += 1
    print(json.dumps({"searches": searches}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("index", "label", "read"))
    parser.add_argument("db")
    parser.add_argument("source", nargs="?")
    parser.add_argument("--kill")
    parser.add_argument("--wait-for-go", action="store_true")
    parser.add_argument("--retry-busy", action="store_true")
    args = parser.parse_args()
    import warnings

    import torch

    from avex_hub.cli import main as cli

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # notices are printed by the command line itself
    _arm(args.kill)
    if args.wait_for_go:
        print("ready", flush=True)
        sys.stdin.readline()
    if args.command == "read":
        return _read(args.db)
    argv = (["index", args.source, "--db", args.db, "--window", "2", "--hop", "1", "--checkpoint", str(FIXTURE),
             "--no-progress", "--workers", "0"] if args.command == "index" else ["label", "--db", args.db, args.source])
    tries = 1
    code = cli(argv)
    while code == BUSY and args.retry_busy:
        time.sleep(0.2)  # as a user would wait; how long does not matter for what the tests check
        tries += 1
        code = cli(argv)
    print(json.dumps({"code": code, "tries": tries}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
