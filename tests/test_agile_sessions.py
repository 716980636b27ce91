"""The archive across real processes (tests/agile_child.py): writers at the same time as each other and as a
reader, and random sequences of sessions that index, touch, delete, label and get killed. What must hold at the
end, every time: the labels are those the user gave (no label lost, none misplaced), every window has its vector
and every vector its window, no row without its recording.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("perch_hoplite")

from agile_support import consistency, labels_of, tiny_recordings, write_rows  # noqa: E402

CHILD = Path(__file__).parent / "agile_child.py"
CLEAN = {"violations": [], "unembedded": [], "stale": []}


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(*args: str) -> tuple[int, str]:
    process = child(*args)
    out, err = process.communicate(timeout=600)
    return process.returncode, err


def windows(db: Path, *, searchable: bool = False) -> list[tuple[str, int, float, float]]:
    """``(file, channel, start_s, end_s)`` of the archive's windows (``searchable``: only those with a vector, which
    are all a user can find by search or detect after a killed run left some without)."""
    import numpy as np

    conn = sqlite3.connect(db / "hoplite.sqlite")
    rows = conn.execute("SELECT windows.id, recordings.filename, windows.channel, windows.offsets FROM windows JOIN "
                        "recordings ON windows.recording_id = recordings.id ORDER BY windows.id").fetchall()
    conn.close()
    without = set(consistency(db)["unembedded"]) if searchable else set()
    return [(f, c, *np.frombuffer(o, "<f8").tolist()) for i, f, c, o in rows if i not in without]


def archive_id(db: Path) -> str:
    conn = sqlite3.connect(db / "hoplite.sqlite")
    (value,) = conn.execute("SELECT value FROM hoplite_metadata WHERE key = 'avex_hub_schema'").fetchone()
    conn.close()
    return json.loads(value)["archive_id"]


def labels_csv(path: Path, db: Path, picked: list[tuple], label: str, kinds: list[str]) -> Path:
    """A hits CSV as `avex-hub search` writes it, labelled: one row per picked window."""
    rows = [{"window_id": "0", "file": f, "channel": c, "start_s": f"{s:.6f}", "end_s": f"{e:.6f}", "score": "0",
             "label": label, "label_type": kind, "archive_id": archive_id(db)} for (f, c, s, e), kind in
            zip(picked, kinds)]
    return write_rows(path, rows)


def test_two_writers_and_a_reader_at_once_end_consistent_with_every_label(tmp_path):
    """An index run adding files, a label run and a reader start together; the label run finds the archive busy
    (exit 4, the holder named) and is run again, as a user would, until it gets its turn. A second index run into a
    new archive races the first for its creation."""
    folder, more, db = tmp_path / "rec", tmp_path / "more", tmp_path / "db"
    tiny_recordings(folder, ("a.wav", "b.wav"))
    assert run("index", str(db), str(folder))[0] == 0
    tiny_recordings(more, [f"m{i}.wav" for i in range(6)], seed=1)
    given = windows(db)
    path = labels_csv(tmp_path / "labels.csv", db, [w for w in given], "Sweepus",
                      ["positive", "negative", "uncertain"] * 2)
    writers = [child("index", str(db), str(more), "--wait-for-go", "--retry-busy"),
               child("label", str(db), str(path), "--wait-for-go", "--retry-busy")]
    reader = child("read", str(db), "--wait-for-go")
    for process in (*writers, reader):
        assert process.stdout.readline().strip() == "ready"
    for process in (*writers, reader):
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in writers:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    out, err = reader.communicate("", timeout=600)  # closing its stdin ends its searches
    assert reader.returncode == 0, err
    assert json.loads(out)["searches"] >= 3
    assert consistency(db) == {**CLEAN, "windows": 2 * 3 + 6 * 3}
    assert labels_of(db) == {(Path(f).name, c, s, e, "Sweepus", kind) for (f, c, s, e), kind in
                             zip(given, ["positive", "negative", "uncertain"] * 2)}
    assert all(r["code"] == 0 for r in results)
    # Two runs creating one new archive at once: one makes it, the other waits its turn; every file once.
    new = tmp_path / "new"
    racers = [child("index", str(new), str(more), "--wait-for-go", "--retry-busy") for _ in range(2)]
    for process in racers:
        assert process.stdout.readline().strip() == "ready"
    for process in racers:
        process.stdin.write("go\n")
        process.stdin.flush()
    for process in racers:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    assert consistency(new) == {**CLEAN, "windows": 6 * 3}
    assert sorted(Path(f).name for f, *_ in windows(new))[::3] == [f"m{i}.wav" for i in range(6)]


KILLS = ("files:1", "save", "saving")
LABELS = ("positive", "negative", "uncertain")


@pytest.mark.parametrize("seed", [int(os.environ.get("AVEX_AGILE_SEED", 0))])
def test_random_sessions_keep_the_user_s_labels_and_every_vector(tmp_path, seed):
    """Random sessions, each a fresh process: index (sometimes killed at a random point), touch a file, delete a
    file, add a file, label some windows (sometimes killed before the commit), index again. About 30 processes.
    After each session and at the end: the labels are exactly those of the label sessions that finished (a
    relabelled window keeps its last verdict; labels of deleted or changed files stay), and the archive is whole."""
    rng = random.Random(seed)
    folder, db = tmp_path / "rec", tmp_path / "db"
    names = [f"f{i}.wav" for i in range(4)]
    tiny_recordings(folder, names[:3], seconds=3.0, seed=seed)
    expected: dict[tuple, str] = {}
    processes, added = 0, 3
    log = []

    def check(whole: bool):
        """The labels, always; the archive whole after a session that finished (a killed one leaves repairs to
        the next writer, which makes them before anything else)."""
        assert {k[:5]: k[5] for k in labels_of(db)} == expected, log
        if whole:
            state = consistency(db)
            assert {k: state[k] for k in CLEAN} == CLEAN, log

    assert run("index", str(db), str(folder))[0] == 0
    processes += 1
    while processes < 28:
        op = rng.choice(["index", "index-killed", "touch", "delete", "add", "label", "label", "label-killed"])
        log.append(op)
        present = sorted(p.name for p in folder.iterdir())
        if op == "touch" and present:
            target = folder / rng.choice(present)
            stamp = rng.randrange(10**17, 10**18)
            os.utime(target, ns=(stamp, stamp))
            continue
        if op == "delete" and len(present) > 1:
            (folder / rng.choice(present)).unlink()
            continue
        if op == "add":
            added += 1
            tiny_recordings(folder, [f"f{added}.wav"], seconds=3.0, seed=seed + added)
            continue
        if op.startswith("index"):
            kill = ["--kill", rng.choice(KILLS)] if op == "index-killed" else []
            code, err = run("index", str(db), str(folder), *kill)
            processes += 1
            assert code in ((-9, 0) if kill else (0,)), (op, kill, err)  # a run with nothing to do is not killed
            log[-1] += f" {kill} exit {code}"
        elif op.startswith("label"):
            known = windows(db, searchable=True)
            if not known:
                continue
            picked = rng.sample(known, min(len(known), rng.randint(1, 4)))
            kinds = [rng.choice(LABELS) for _ in picked]
            label = rng.choice(["Sweepus", "Trillus"])
            path = labels_csv(tmp_path / f"labels{processes}.csv", db, picked, label, kinds)
            kill = ["--kill", f"stored:{rng.randrange(len(picked))}"] if op == "label-killed" else []
            code, err = run("label", str(db), str(path), *kill)
            processes += 1
            assert code == (-9 if kill else 0), (op, err)
            log[-1] += f" exit {code}"
            if not kill:
                for (f, c, s, e), kind in zip(picked, kinds):
                    expected[(Path(f).name, c, round(s, 6), round(e, 6), label)] = kind
        check(whole=not log[-1].endswith("exit -9"))
    assert run("index", str(db), str(folder))[0] == 0  # a last run embeds whatever a killed run left
    check(whole=True)
    state = consistency(db)
    present = {p.name for p in folder.iterdir()}
    indexed = {Path(f).name for f, *_ in windows(db)}
    assert present <= indexed, log  # every file there is in the archive (deleted ones stay until pruned)
    assert state["windows"] == 2 * len(indexed)
    assert len(expected) >= 3 and sum(op.endswith("exit -9") for op in log) >= 3, log  # it did what it is for
