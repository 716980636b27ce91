"""monitoring.scores and .species: score tables read from wide, long and Parquet files with their source; top-k
rows and incomplete tables refused; species lists matched with suggestions."""

from __future__ import annotations

import numpy as np
import pytest

from avex_hub.monitoring.scores import ScoreSource, ScoreTable, read_scores, write_scores
from avex_hub.labels import match_species
from avex_hub.monitoring.species import read_species


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return ScoreTable(np.array(["a.wav"] * 3 + ["b.wav"] * 2, dtype=object), np.array([-1, -1, -1, 0, 1], np.int32),
                      np.array([0.0, 5, 10, 0, 0]), np.array([10.0, 15, 20, 10, 10]),
                      rng.random((5, 2)).astype(np.float32), ["Strix aluco", "Bubo bubo"],
                      ScoreSource("a" * 64, "b" * 64, "esp_aves2_sl_beats_all", 10.0, 5.0))


def _same(a: ScoreTable, b: ScoreTable) -> None:
    assert a.file.tolist() == b.file.tolist() and a.channel.tolist() == b.channel.tolist()
    np.testing.assert_array_equal(a.start_s, b.start_s)
    np.testing.assert_array_equal(a.scores, b.scores)  # float32 written as the shortest text that reads back
    assert a.labels == b.labels


def test_wide_csv_round_trips_with_its_source(table, tmp_path):
    write_scores(tmp_path / "scores.csv", table)
    back = read_scores(tmp_path / "scores.csv")
    _same(back, table)
    assert back.source == table.source
    assert read_scores(tmp_path / "scores.csv", source=ScoreSource("c" * 64)).source.weights_sha256 == "c" * 64
    assert back.durations() == {"a.wav": 20.0, "b.wav": 10.0}


def test_long_csv_and_parquet_are_pivoted(table, tmp_path):
    lines = ["file,channel,start_s,end_s,label,score,flags"]
    for i in range(len(table)):
        for j, label in enumerate(table.labels):
            lines.append(f"{table.file[i]},{table.channel[i]},{table.start_s[i]},{table.end_s[i]},{label},"
                         f"{np.format_float_positional(table.scores[i, j])},")
    (tmp_path / "long.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _same(read_scores(tmp_path / "long.csv"), table)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [line.split(",") for line in lines[1:]]
    pq.write_table(pa.table({"file": [r[0] for r in rows], "channel": [int(r[1]) for r in rows],
                             "start_s": [float(r[2]) for r in rows], "end_s": [float(r[3]) for r in rows],
                             "label": [r[4] for r in rows], "score": [float(r[5]) for r in rows]}),
                   tmp_path / "long.parquet")
    _same(read_scores(tmp_path / "long.parquet"), table)
    (tmp_path / "gap.csv").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="window b.wav 0.0-10.0 s has no score for 'Bubo bubo'"):
        read_scores(tmp_path / "gap.csv")


def test_bad_tables(tmp_path):
    (tmp_path / "s.csv").write_text("file,channel,start_s,end_s,x\na.wav,-1,0,10,1.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="scores must be probabilities in"):
        read_scores(tmp_path / "s.csv")
    (tmp_path / "t.csv").write_text("file,start_s,x\na.wav,0,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing the column.* channel, end_s"):
        read_scores(tmp_path / "t.csv")


def test_species_lists_match_spelling_and_suggest_close_labels(tmp_path):
    labels = ["Strix aluco", "Bubo bubo", "Athene noctua"]
    assert match_species(["  strix  ALUCO", "Bubo bubo", "Strix aluco"], labels) == ["Strix aluco", "Bubo bubo"]
    path = tmp_path / "species.txt"
    path.write_text("\ufeff# owls\n\nAthene noctua\nStrix alucco\nPica pica\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        read_species(path, labels)
    text = str(error.value)
    assert "2 name(s)" in text and "line 4: 'Strix alucco' (did you mean 'Strix aluco'?)" in text
    assert "line 5: 'Pica pica' (no similar label)" in text and "\n" not in text


def test_the_species_head_gives_every_asked_label_as_classify_does(tiny_model, tmp_path, one_torch_thread):
    # classify with k = every label is the brute force: each window's full score vector, asked labels picked out
    from avex_hub.embed.inference import classify_files
    from avex_hub.monitoring.scores import score_with_head
    from recorder_files import plain_wav

    paths = [plain_wav(tmp_path / "a.wav", seconds=5.0, freq=700.0), plain_wav(tmp_path / "b.wav", seconds=3.0)]
    names = list(tiny_model.labels)
    asked = [names[-1], names[0], names[len(names) // 2]]
    full = classify_files(tiny_model, paths, top_k=len(names), window_s=2.0, hop_s=1.0, progress=False)
    brute = np.zeros((len(full), len(names)), np.float32)
    np.put_along_axis(brute, full.top_indices.astype(np.int64), full.top_scores, axis=1)
    table = score_with_head(tiny_model, [" ".join(asked[0].split()).lower(), *asked[1:]], paths, window_s=2.0,
                            hop_s=1.0)
    assert table.labels == asked  # matched to the label map's spelling
    assert table.file.tolist() == [str(p) for p in full.file] and table.start_s.tolist() == full.start_s.tolist()
    np.testing.assert_allclose(table.scores, brute[:, [names.index(a) for a in asked]], atol=1e-5)
    assert table.source == ScoreSource(tiny_model.weights_sha256, None, tiny_model.name, 2.0, 1.0)
    with pytest.raises(ValueError, match="did you mean"):
        score_with_head(tiny_model, [asked[0][:-1] + "x"], paths, window_s=2.0, hop_s=1.0)
    # embed once (resumable, any device), then score any species from the Parquet file
    from avex_hub.embed.inference import embed_files

    embed_files(tiny_model, paths, window_s=2.0, hop_s=1.0, progress=False).to_parquet(tmp_path / "emb.parquet")
    again = score_with_head(tiny_model, asked, tmp_path / "emb.parquet")
    np.testing.assert_allclose(again.scores, table.scores, atol=1e-6)
    assert again.file.tolist() == table.file.tolist() and again.source == table.source
    with pytest.raises(ValueError, match="embedded with window 2.0 s and hop 1.0 s"):
        score_with_head(tiny_model, asked, tmp_path / "emb.parquet", window_s=10.0)
    embed_files(tiny_model, paths, window_s=2.0, pooling="max", progress=False).to_parquet(tmp_path / "max.parquet")
    with pytest.raises(ValueError, match="pooled by 'max'"):
        score_with_head(tiny_model, asked, tmp_path / "max.parquet")
    other = type(tiny_model).__new__(type(tiny_model))
    other.__dict__.update(tiny_model.__dict__)
    other.weights_sha256 = "0" * 64
    with pytest.raises(ValueError, match="score with the model that embedded them"):
        score_with_head(other, asked, tmp_path / "emb.parquet")
