"""Search (avex_hub.integrations.agile.search): hoplite's search and ours against brute force and our retrieval
metrics; queries.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("perch_hoplite")

from avex_hub.integrations import agile  # noqa: E402
from avex_hub.cli import main  # noqa: E402
from agile_support import WINDOW, archive_path, data, read_rows  # noqa: E402,F401 - data, archive_path: fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_hoplite_search_returns_the_brute_force_neighbours(archive_path, tmp_path):
    from perch_hoplite.db import brutalism, score_functions

    cos = score_functions.get_score_fn("cos")

    def check(archive, queries, exact_ids: bool):
        ids = archive.window_table()["window_id"]
        vectors = archive.vectors(ids)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        for q in queries:
            true = unit @ unit[q]
            order = np.argsort(-true, kind="stable")[:10]
            results = {"exact": archive.db.search(vectors[q], 10, approximate=False, score_fn_name="cos"),
                       "approximate": archive.db.search(vectors[q], 10, approximate=True, score_fn_name="cos"),
                       "brute": brutalism.brute_search(archive.db, vectors[q], 10, cos)}
            for name, found in results.items():
                got = np.array([int(r.window_id) for r in sorted(found, reverse=True)])
                if name == "approximate":  # HNSW: a graph search, not a scan; its recall is what it promises
                    near = true >= true[order][-1] - 2e-3  # the true top 10, up to float16 ties
                    assert near[np.searchsorted(ids, got)].mean() >= 0.8, (name, got, ids[order])
                elif exact_ids:
                    assert got.tolist() == ids[order].tolist(), name
                else:  # neighbours up to float16 ties: the k-th result scores as the true k-th neighbour
                    np.testing.assert_allclose(true[np.searchsorted(ids, got)], true[order], atol=2e-3, err_msg=name)
            hits = agile.search_vectors(archive, vectors[q], top=10)
            # Rescored in float32: the true ids, in order, except that two windows whose true scores differ by less
            # than float32's rounding of a dot product (the tiny model's windows lie at cosine ~0.98 of each other)
            # may come in either order, as the rescoring's matrix product rounds them.
            got = np.array([h.window_id for h in hits])
            swapped = got != ids[order]
            np.testing.assert_allclose(true[np.searchsorted(ids, got[swapped])], true[order][swapped], atol=1e-6)
            np.testing.assert_allclose([h.score for h in hits], true[order], atol=1e-5)

    # The tiny model's embeddings lie within a few degrees of each other (cosine ~0.98), where hoplite's float16
    # rescoring ties; well-separated vectors in a database of the same kind must give the very same ids.
    check(agile.Archive.open(archive_path, readonly=True), (0, 7, 33), exact_ids=False)
    archive = agile.Archive.open(archive_path, readonly=True)
    spread = tmp_path / "spread"
    settings = dict(archive.settings)
    other = agile.Archive.create_or_open(spread, settings)
    rng = np.random.default_rng(1)
    recording = other.db.insert_recording(filename="x.wav", deployment_id=1, size=0, mtime_ns=0, duration_s=0.0)
    other.db.insert_windows_batch([{"recording_id": recording, "offsets": [float(i), float(i + 1)], "channel": -1,
                                    "flags": 0} for i in range(200)],
                                  rng.standard_normal((200, settings["embedding_dim"])).astype(np.float32),
                                  handle_duplicates="allow")
    other.db.commit()
    check(agile.Archive.open(spread, readonly=True), (0, 50, 199), exact_ids=True)


def test_retrieval_from_the_database_equals_the_metric(model, data, tmp_path):
    from avex_hub.heads.metrics import retrieval_per_query

    agile.index_files(model, [data.root / "clips"], tmp_path / "clips", window_s=WINDOW,
                      progress=False)
    archive = agile.Archive.open(tmp_path / "clips", readonly=True)
    table = archive.window_table()
    labels = np.array([os.path.basename(os.path.dirname(f)) for f in table["file"]])
    vectors = archive.vectors(table["window_id"])
    n = len(vectors)
    assert n == 24
    auc, hit = [], []
    for i in range(n):
        hits = [h for h in agile.search_vectors(archive, vectors[i], top=n, exact=True) if h.window_id != table["window_id"][i]]
        row = np.searchsorted(table["window_id"], [h.window_id for h in hits])
        scores, positive = np.array([h.score for h in hits]), labels[row] == labels[i]
        pos, neg = scores[positive], scores[~positive]
        auc.append(((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()))
        hit.append(positive[0])
    reference = retrieval_per_query(vectors, labels)
    np.testing.assert_allclose(auc, reference["roc_auc"], atol=1e-6)
    assert np.mean(hit) == pytest.approx(reference["hit"].mean())


def test_a_query_shorter_than_the_model_minimum_is_refused(model, data, archive_path):
    archive = agile.Archive.open(archive_path, readonly=True)
    with pytest.raises(ValueError, match=r"0\.050 s long; the model needs at least 0\.175 s"):
        agile.search(archive, model, [agile.Query(str(data.long_recordings[0]), 1.0, 1.05)])
    with pytest.raises(FileNotFoundError, match="FILE:START-END"):
        agile.parse_query("nothing.wav:1-2x")
    assert agile.parse_query(f"{data.long_recordings[0]}:1.5-3") == agile.Query(str(data.long_recordings[0]), 1.5, 3.0)


def test_several_queries_average_or_max_their_scores(model, data, archive_path):
    archive = agile.Archive.open(archive_path, readonly=True)
    queries = [agile.Query(str(data.long_recordings[0]), 2.0, 3.0), agile.Query(str(data.long_recordings[1]), 5.0, 6.5)]
    q = agile.embed_queries(model, queries, archive.settings)
    ids = archive.window_table()["window_id"]
    v = archive.vectors(ids)
    cos = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    for combine, reduce in (("mean", cos.mean(1)), ("max", cos.max(1))):
        hits = agile.search(archive, model, queries, top=5, combine=combine, exact=True)
        assert [h.window_id for h in hits] == ids[np.argsort(-reduce, kind="stable")][:5].tolist()
        np.testing.assert_allclose([h.score for h in hits], np.sort(reduce)[::-1][:5], atol=1e-5)


def test_search_finds_the_local_weights_the_archive_was_built_with(data, tmp_path, tiny_copy, capsys):
    """On main `search` without --checkpoint on an archive indexed with local weights went to the Hub (offline: a
    failure; online: other weights). The archive remembers where its weights were and their digest."""
    from avex_hub.hub.loading import sha256_file

    db = tmp_path / "db"
    assert main(["index", str(data.long_recordings[0]), "--db", str(db), "--window", "2", "--hop", "1",
                 "--no-progress", "--checkpoint", str(tiny_copy)]) == 0
    weights = tiny_copy / "model.safetensors"
    digest = sha256_file(weights)
    assert agile.Archive.open(db, readonly=True).weights == {"path": str(weights.resolve()), "sha256": digest}
    argv = ["search", "--db", str(db), "--query", f"{data.long_recordings[0]}:1-3", "--top", "3", "--out",
            str(tmp_path / "hits.csv"), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 0
    assert f"avex-hub: using the weights at {weights.resolve()}, which made this archive" in capsys.readouterr().err
    assert len(read_rows(tmp_path / "hits.csv")) == 3
    changed = bytearray(weights.read_bytes())
    changed[-1] ^= 1
    weights.write_bytes(bytes(changed))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the file it remembers, {weights.resolve()}, has changed since" in err[0]
    assert "pass --checkpoint with the weights the archive was built with" in err[0]
    weights.unlink()
    assert main(argv) == 2
    assert f"they were at {weights.resolve()}, which is gone: pass --checkpoint" in capsys.readouterr().err


def test_a_search_while_a_writer_removes_windows_returns_only_windows_in_the_tables(archive_path, tmp_path):
    """A reader can see the vector index of before a writer's commit with the tables of after it: a vector whose
    window is gone is left out, not a KeyError."""
    import sqlite3

    db = tmp_path / "db"
    shutil.copytree(archive_path, db)
    reader = agile.Archive.open(db, readonly=True)
    query = reader.vectors([1])[0]
    conn = sqlite3.connect(db / "hoplite.sqlite")  # the tables committed, the index not yet saved
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("DELETE FROM windows WHERE id <= 10")
    conn.commit()
    conn.close()
    hits = agile.search_vectors(reader, query, top=38, exact=True)
    assert len(hits) == 28 and min(h.window_id for h in hits) == 11
