"""monitoring.review and .spectrogram: stratified, seeded sampling without repeats; clips, spectrogram PNGs and the
sheet written and read back; filled sheets read with their errors named by line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from avex_hub.monitoring.review import SETTINGS, read_reviews, sample_reviews, write_review
from avex_hub.monitoring.scores import ScoreSource, ScoreTable
from avex_hub.monitoring.spectrogram import spectrogram_image, write_png
from recorder_files import plain_wav

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture
def table(tmp_path):
    """Three 30 s recordings (16, 24 and 48 kHz tones), 2 s windows every 1 s, two labels with spread scores."""
    files = [plain_wav(tmp_path / "audio" / f"r{i}.wav", seconds=30.0, rate=rate, freq=1000.0 * (i + 1))
             for i, rate in enumerate((16000, 24000, 48000))]
    starts = np.arange(0.0, 29.0, 1.0)
    n = len(starts)
    rng = np.random.default_rng(0)
    return ScoreTable(np.array([str(f) for f in files for _ in range(n)], dtype=object), np.full(3 * n, -1, np.int32),
                      np.tile(starts, 3), np.tile(np.minimum(starts + 2.0, 30.0), 3),
                      rng.random((3 * n, 2)).astype(np.float32), ["Sweepus ascendens", "Trillia rapida"],
                      ScoreSource("a" * 64))


def test_sampling_is_stratified_seeded_and_never_repeats_a_window(table):
    picks = sample_reviews(table, table.labels, bins=5, per_bin=4, seed=3)
    rows = [i for i, _, _ in picks]
    assert len(rows) == len(set(rows))  # never two clips of one window, across labels too
    for first, label in zip((True, False), table.labels):
        scores = table.column(label)
        x = np.log(scores) - np.log1p(-scores)
        edges = np.linspace(x.min(), x.max(), 6)  # equal widths in the logit, lowest to highest score
        for b in range(5):
            mine = [i for i, lab, k in picks if lab == label and k == b]
            in_bin = int(((x >= edges[b]) & ((x < edges[b + 1]) | (b == 4))).sum())
            assert len(mine) == min(4, in_bin) if first else len(mine) <= 4  # later labels: windows not yet taken
            assert all(edges[b] - 1e-6 <= x[i] <= edges[b + 1] + 1e-6 for i in mine)
    assert picks == sample_reviews(table, table.labels, bins=5, per_bin=4, seed=3)
    assert picks != sample_reviews(table, table.labels, bins=5, per_bin=4, seed=4)
    small = sample_reviews(table, ["Trillia rapida"], bins=2, per_bin=1000)
    assert len(small) == len(table)  # fewer windows than asked: all of them, once


def test_review_folder_holds_clips_spectrograms_sheet_and_settings(table, tmp_path):
    sheet = write_review(tmp_path / "review", table, table.labels, bins=5, per_bin=2, seed=0, padding_s=1.0)
    with open(sheet, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and {r["verdict"] for r in rows} == {""}
    for row in rows:
        audio, rate = sf.read(str(sheet.parent / row["clip"]))
        assert rate == sf.info(row["file"]).samplerate  # the recording's own rate
        start, end = float(row["start_s"]), float(row["end_s"])
        want = min(end + 1.0, 30.0) - max(start - 1.0, 0.0)
        assert len(audio) == round(want * rate)
        assert float(row["clip_start_s"]) == pytest.approx(min(start, 1.0))
        image = np.asarray(PIL.open(sheet.parent / row["spectrogram"]).convert("RGB"))
        assert image.shape[0] == 257 and 700 <= image.shape[1] <= 800
    settings = json.loads((sheet.parent / SETTINGS).read_text())
    assert settings["source"]["weights_sha256"] == "a" * 64
    assert sum(settings["histograms"]["Trillia rapida"]) == len(table)
    with pytest.raises(FileExistsError, match="already holds a review"):
        write_review(tmp_path / "review", table, table.labels)


def test_the_spectrogram_puts_a_tone_at_its_frequency_and_marks_the_window(tmp_path):
    rate = 16000
    t = np.arange(3 * rate) / rate
    image = spectrogram_image(np.sin(2 * np.pi * 2000 * t), rate, marks_s=(1.0, 2.0))
    write_png(tmp_path / "s.png", image)
    back = np.asarray(PIL.open(tmp_path / "s.png").convert("RGB"))  # an independent PNG decoder
    np.testing.assert_array_equal(back, image)
    height = image.shape[0]
    brightness = image[:, 50:-50].astype(int).sum(2).mean(1)
    assert abs(int(np.argmax(brightness)) - (height - 1 - round(2000 / 8000 * (height - 1)))) <= 1
    white = np.flatnonzero((image[height // 2 - 2:height // 2 + 2] == 255).all(2).any(0))
    hop = -(-(len(t) - 512) // 799)
    assert set(white) >= {round(rate / hop), round(2 * rate / hop)}


def _fill(sheet, verdicts):
    with open(sheet, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row, verdict in zip(rows, verdicts):
        row["verdict"] = verdict
    with open(sheet, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_filled_sheets_are_read_and_bad_verdicts_named(table, tmp_path):
    sheet = write_review(tmp_path / "review", table, table.labels, bins=5, per_bin=2, padding_s=0.0)
    rows = _fill(sheet, [" Yes", "no", "UNSURE", ""] * 5)
    source, reviews = read_reviews([sheet])
    assert source == table.source
    first = reviews["Sweepus ascendens"]
    assert first["verdicts"][:4] == ["yes", "no", "unsure", ""]
    assert first["scores"][0] == pytest.approx(float(rows[0]["score"]))
    with pytest.raises(ValueError, match="reviews the window of .* again; give each sheet once"):
        read_reviews([sheet, sheet])
    _fill(sheet, ["yes", "maybe"])
    with pytest.raises(ValueError, match=r"review.csv, line 3: verdict 'maybe' is not yes, no or unsure") as error:
        read_reviews([sheet])
    assert "\n" not in str(error.value)
    (sheet.parent / SETTINGS).unlink()
    with pytest.raises(FileNotFoundError, match="review.json is missing"):
        read_reviews([sheet])


def test_verdicts_become_agile_labels_of_the_same_windows(table, tmp_path):
    from avex_hub.monitoring.review import write_agile_labels

    sheet = write_review(tmp_path / "review", table, table.labels, bins=5, per_bin=2, padding_s=0.0)
    rows = _fill(sheet, ["yes", "no", "unsure", ""] * 5)
    _, reviews = read_reviews([sheet])
    assert write_agile_labels(tmp_path / "labels.csv", reviews) == 15  # the 5 unreviewed clips are left out
    with open(tmp_path / "labels.csv", newline="", encoding="utf-8") as handle:
        labels = list(csv.DictReader(handle))
    kinds = {"yes": "positive", "no": "negative", "unsure": "uncertain"}
    expected = [{"file": r["file"], "channel": r["channel"], "start_s": r["start_s"], "end_s": r["end_s"],
                 "label": r["label"], "label_type": kinds[r["verdict"]], "provenance": "avex-hub review"}
                for r in rows if r["verdict"]]
    assert sorted(labels, key=lambda r: (r["label"], r["file"], float(r["start_s"]))) == \
        sorted(expected, key=lambda r: (r["label"], r["file"], float(r["start_s"])))
    window = {(float(s), float(e)) for s, e in zip(table.start_s, table.end_s)}
    assert all((float(r["start_s"]), float(r["end_s"])) in window for r in labels)  # exactly the scored windows
