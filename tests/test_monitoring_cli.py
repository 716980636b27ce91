"""``avex-hub times|events|review|calibrate|presence`` end to end on a small survey in the recorders' layouts, and
the bad inputs of issue 20's "Done when", each refused in one line with exit code 2."""

from __future__ import annotations

import csv
import datetime as dt
import json

import numpy as np
import pytest

from avex_hub.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from avex_hub.monitoring.recordings import read_recordings
from avex_hub.monitoring.scores import ScoreSource, ScoreTable, write_scores
from recorder_files import audiomoth_wav, plain_wav

LABELS = ["Sweepus ascendens", "Trillia rapida"]


@pytest.fixture
def survey(tmp_path):
    """Two AudioMoths (one per site) with two 60 s recordings each, 2 s windows every 1 s scored for two labels:
    Sweepus ascendens calls at 10-11.5 s of every recording of site N, nothing at site S."""
    paths = []
    for site, serial in (("north", "AAAA000000000001"), ("south", "AAAA000000000002")):
        for day in (1, 2):
            comment = (f"Recorded at 05:00:00 0{day}/06/2026 (UTC+2) by AudioMoth {serial} at medium gain while "
                       "battery was 4.2V")
            paths.append(audiomoth_wav(tmp_path / site / f"2026060{day}_050000.WAV", comment, serial=serial,
                                       seconds=60.0, rate=16000))
    starts = np.arange(0.0, 59.0, 1.0)
    rows = [(str(p), s) for p in paths for s in starts]
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.3, (len(rows), 2))
    for i, (path, s) in enumerate(rows):
        if "north" in path and s < 11.5 and s + 2 > 10.0:
            scores[i, 0] = 0.9
    table = ScoreTable(np.array([p for p, _ in rows], dtype=object), np.full(len(rows), -1, np.int32),
                       np.array([s for _, s in rows]), np.array([s + 2.0 for _, s in rows]),
                       scores.astype(np.float32), LABELS,
                       ScoreSource("a" * 64, None, "esp_aves2_sl_beats_all", 2.0, 1.0))
    write_scores(tmp_path / "scores.csv", table)
    (tmp_path / "deployments.csv").write_text(
        "folder,recorder,site,latitude,longitude,start,end,timezone\n"
        "north,,N,52.5,13.4,2026-05-20,2026-06-30,Europe/Berlin\n"
        ",AAAA000000000002,S,52.4,13.3,2026-05-20,,Europe/Berlin\n", encoding="utf-8")
    return tmp_path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("avex-hub: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_from_scores_to_events_review_calibration_and_presence(survey, capsys):
    d = survey
    assert main(["times", str(d / "north"), str(d / "south"), "--deployments", str(d / "deployments.csv"),
                 "--out", str(d / "recordings.csv")]) == EXIT_OK
    recordings = read_recordings(d / "recordings.csv")
    assert [r.site for r in recordings] == ["N", "N", "S", "S"] and all(r.duration_s == 60.0 for r in recordings)
    assert recordings[0].start == dt.datetime(2026, 6, 1, 3, tzinfo=dt.timezone.utc)

    assert main(["events", str(d / "scores.csv"), "--threshold", "0.5", "--deployments", str(d / "deployments.csv"),
                 "--out", str(d / "events.csv"), "--raven", str(d / "raven")]) == EXIT_OK
    with open(d / "events.csv", newline="") as handle:
        events = list(csv.DictReader(handle))
    assert [(e["site"], e["label"], e["start_s"], e["end_s"]) for e in events] == [("N", LABELS[0], "9", "13")] * 2
    assert events[0]["start_time"] == "2026-06-01T05:00:09.000+02:00" and events[0]["latitude"] == "52.5"
    tables = sorted((d / "raven").iterdir())
    assert len(tables) == 4  # one per recording (the same names at two sites get a path hash)
    assert sum(t.read_text(encoding="utf-8").count("\n") - 1 for t in tables) == 2  # one selection per event

    assert main(["review", str(d / "scores.csv"), "--out", str(d / "review"), "--per-bin", "3", "--bins", "4",
                 "--deployments", str(d / "deployments.csv")]) == EXIT_OK
    sheet = d / "review" / "review.csv"
    with open(sheet, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(r["site"] in ("N", "S") and r["start_time"] for r in rows)
    for row in rows:  # the reviewer: a window holds the call when it overlaps 10-11.5 s at site N
        start = float(row["start_s"])
        row["verdict"] = "yes" if row["label"] == LABELS[0] and "north" in row["file"] and start < 11.5 and \
            start + 2 > 10 else "no"
    with open(sheet, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(["calibrate", str(sheet), "--target-precision", "0.9", "--min-reviews", "5",
                 "--out", str(d / "thresholds.json"), "--labels", str(d / "labels.csv")]) == EXIT_OK
    out = capsys.readouterr().out
    with open(d / "labels.csv", newline="") as handle:  # the same verdicts, as agile labels of the same windows
        labels = list(csv.DictReader(handle))
    assert sorted((r["label"], r["file"], r["start_s"], r["label_type"]) for r in labels) == sorted(
        (r["label"], r["file"], r["start_s"], "positive" if r["verdict"] == "yes" else "negative") for r in rows)
    assert f"{LABELS[1]}: 0 yes" in out and "no threshold: too few reviews" in out
    thresholds = json.loads((d / "thresholds.json").read_text())
    assert thresholds["source"]["weights_sha256"] == "a" * 64
    assert thresholds["labels"][LABELS[0]]["status"] == "ok"

    assert main(["events", str(d / "scores.csv"), "--thresholds", str(d / "thresholds.json"), "--deployments",
                 str(d / "deployments.csv"), "--out", str(d / "calibrated.csv")]) == EXIT_OK
    with open(d / "calibrated.csv", newline="") as handle:
        calibrated = list(csv.DictReader(handle))
    assert len(calibrated) == 2 and all(float(e["max_probability"]) > 0.5 for e in calibrated)
    assert "no calibrated threshold for 1 label(s)" in capsys.readouterr().err

    assert main(["presence", str(d / "events.csv"), "--out", str(d / "presence")]) == EXIT_OK
    with open(d / "presence" / "y_Sweepus_ascendens.csv", newline="") as handle:
        y = list(csv.reader(handle))
    assert y == [["site", "2026-06-01", "2026-06-02"], ["N", "1", "1"], ["S", "0", "0"]]
    with open(d / "presence" / "y_Trillia_rapida.csv", newline="") as handle:
        assert list(csv.reader(handle))[1:] == [["N", "0", "0"], ["S", "0", "0"]]  # searched, never found


def test_thresholds_for_another_model_are_refused(survey, capsys):
    d = survey
    (d / "other.json").write_text(json.dumps({
        "format": "avex-hub thresholds", "format_version": 1, "target_precision": 0.9,
        "source": {"weights_sha256": "f" * 64, "probe_sha256": None, "model": None, "window_s": None, "hop_s": None},
        "labels": {}}), encoding="utf-8")
    assert main(["events", str(d / "scores.csv"), "--thresholds", str(d / "other.json"),
                 "--out", str(d / "e.csv")]) == EXIT_USAGE
    line = _error_line(capsys)
    assert "fitted to scores of another model (weights_sha256: ffff" in line and "calibrate" in line
    assert not (d / "e.csv").exists()


def test_a_review_sheet_with_an_unknown_verdict_is_refused(survey, capsys):
    d = survey
    assert main(["review", str(d / "scores.csv"), "--out", str(d / "review"), "--per-bin", "1"]) == EXIT_OK
    text = (d / "review" / "review.csv").read_text(encoding="utf-8").splitlines()
    text[2] = text[2][: text[2].rindex(",,")] + ",probably," + text[2][text[2].rindex(",,") + 2:]
    (d / "review" / "review.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    assert main(["calibrate", str(d / "review" / "review.csv"), "--target-precision", "0.9",
                 "--out", str(d / "t.json")]) == EXIT_USAGE
    assert "line 3: verdict 'probably' is not yes, no or unsure" in _error_line(capsys)


@pytest.mark.parametrize("rows, message", [
    ("north,,N,,,2026-05-01,2026-06-10,\nnorth,,N2,,,2026-06-05,,\n", "lines 2 and 3 give folder"),
    ("west,,W,,,,,\n", "folder 'west' does not exist"),
])
def test_deployments_with_overlapping_dates_or_unknown_folders_are_refused(survey, capsys, rows, message):
    d = survey
    (d / "bad.csv").write_text("folder,recorder,site,latitude,longitude,start,end,timezone\n" + rows, encoding="utf-8")
    assert main(["events", str(d / "scores.csv"), "--threshold", "0.5", "--deployments", str(d / "bad.csv"),
                 "--out", str(d / "e.csv")]) == EXIT_USAGE
    assert message in _error_line(capsys)


def test_a_file_name_with_an_impossible_date_is_refused(tmp_path, capsys):
    plain_wav(tmp_path / "rec" / "20260631_050000.WAV")
    assert main(["times", str(tmp_path / "rec"), "--timezone", "UTC", "--out", str(tmp_path / "r.csv")]) == EXIT_USAGE
    line = _error_line(capsys)
    assert "20260631_050000.WAV: the file name says 2026-06-31 05:00:00, which is not a real date" in line


def test_top_k_rows_and_misspelt_species_are_refused(survey, capsys):
    d = survey
    (d / "topk.csv").write_text("file,channel,start_s,end_s,rank,label,score,flags\na.wav,-1,0,10,1,x,0.9,\n",
                                encoding="utf-8")
    assert main(["events", str(d / "topk.csv"), "--threshold", "0.5", "--out", str(d / "e.csv")]) == EXIT_USAGE
    assert "holds top-k rows" in _error_line(capsys)
    (d / "species.txt").write_text("# my survey\nSweepus ascendens\nTrilia rapida\n", encoding="utf-8")
    assert main(["events", str(d / "scores.csv"), "--species", str(d / "species.txt"), "--threshold", "0.5",
                 "--out", str(d / "e.csv")]) == EXIT_USAGE
    assert "line 3: 'Trilia rapida' (did you mean 'Trillia rapida'?)" in _error_line(capsys)


def test_unreadable_recordings_are_listed_and_the_rest_written(survey, capsys):
    d = survey
    (d / "north" / "20260603_050000.WAV").write_bytes(b"RIFF\0\0\0\0WAVEbroken")
    assert main(["times", str(d / "north"), "--out", str(d / "r.csv")]) == 3
    assert len(read_recordings(d / "r.csv")) == 2
    failures = (d / "r.csv.failures.csv").read_text(encoding="utf-8")
    assert "20260603_050000.WAV" in failures
    assert "1 inputs could not be read" in _error_line(capsys)


def test_scores_of_asked_species_carry_absolute_time_site_and_calibrated_probabilities(survey, capsys):
    # the species head of the tiny checkpoint on the survey's AudioMoth files: every asked label, every window
    from avex_hub.monitoring.calibration import LabelCalibration, Thresholds, OK
    from avex_hub.monitoring.scores import read_scores
    from conftest import FIXTURE

    labels = json.loads((FIXTURE / "label_map.json").read_text(encoding="utf-8"))
    names = sorted(labels, key=labels.get) if isinstance(labels, dict) else list(labels)
    (survey / "species.txt").write_text(f"# two species\n{names[1]}\n\n{names[0]}\n", encoding="utf-8")
    args = ["scores", str(survey / "north"), "--checkpoint", str(FIXTURE), "--species", str(survey / "species.txt"),
            "--window", "20", "--hop", "20", "--deployments", str(survey / "deployments.csv"), "--no-progress"]
    assert main([*args, "--out", str(survey / "asked.csv")]) == EXIT_OK
    table = read_scores(survey / "asked.csv")
    assert table.labels == [names[1], names[0]] and len(table) == 6  # 2 files x 3 windows of 20 s
    assert table.source.weights_sha256 is not None and table.source.probe_sha256 is None
    with open(survey / "asked.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["start_time"], r["end_time"], r["site"]) for r in rows[:2]] == [
        ("2026-06-01T05:00:00.000+02:00", "2026-06-01T05:00:20.000+02:00", "N"),
        ("2026-06-01T05:00:20.000+02:00", "2026-06-01T05:00:40.000+02:00", "N")]
    assert main(["embed", str(survey / "north"), "--checkpoint", str(FIXTURE), "--window", "20", "--no-progress",
                 "--out", str(survey / "north.parquet")]) == EXIT_OK
    assert main(["scores", str(survey / "north.parquet"), *args[2:6], *args[10:],
                 "--out", str(survey / "from_embeddings.csv")]) == EXIT_OK
    assert (survey / "from_embeddings.csv").read_text(encoding="utf-8") == \
        (survey / "asked.csv").read_text(encoding="utf-8")  # the same table from the embed run, model not rerun
    one = LabelCalibration(names[0], OK, intercept=1.0, slope=2.0, covariance=[[0.1, 0.0], [0.0, 0.1]])
    Thresholds(table.source, 0.9, {names[0]: one}).save(survey / "thresholds.json")
    assert main([*args, "--out", str(survey / "calibrated.csv"), "--thresholds", str(survey / "thresholds.json")]) \
        == EXIT_OK
    with open(survey / "calibrated.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    score = np.array([float(r[names[0]]) for r in rows])
    expected = 1 / (1 + np.exp(-(1.0 + 2.0 * np.log(score / (1 - score)))))
    np.testing.assert_allclose([float(r[f"probability:{names[0]}"]) for r in rows], expected, rtol=1e-5)
    assert f"probability:{names[1]}" not in rows[0]  # no model of it, no column
    capsys.readouterr()
    (survey / "typo.txt").write_text(names[0][:-1] + "q\n", encoding="utf-8")
    assert main([*args[:5], str(survey / "typo.txt"), "--out", str(survey / "x.csv")]) == EXIT_USAGE
    assert "did you mean" in _error_line(capsys)
    assert main(args[:4] + ["--out", str(survey / "x.csv")]) == EXIT_USAGE
    assert "--species FILE" in _error_line(capsys)


def test_times_puts_absolute_time_and_site_on_classify_and_embed_outputs(survey, capsys):
    import pyarrow.parquet as pq

    from conftest import FIXTURE

    run = ["--checkpoint", str(FIXTURE), "--window", "20", "--no-progress"]
    assert main(["classify", str(survey / "north"), "--out", str(survey / "top.csv"), "--top-k", "2", *run]) == EXIT_OK
    assert main(["embed", str(survey / "south"), "--out", str(survey / "emb.parquet"), *run]) == EXIT_OK
    where = ["--deployments", str(survey / "deployments.csv")]
    assert main(["times", "--table", str(survey / "top.csv"), "--out", str(survey / "top.timed.csv"), *where]) == 0
    with open(survey / "top.csv", newline="", encoding="utf-8") as a, \
            open(survey / "top.timed.csv", newline="", encoding="utf-8") as b:
        before, after = list(csv.reader(a)), list(csv.reader(b))
    assert len(after) == len(before) == 1 + 2 * 3 * 2  # header; 2 files x 3 windows x top 2
    assert all(row[:len(before[0])] == old for row, old in zip(after, before))  # the classify cells as they were
    timed = [dict(zip(after[0], row)) for row in after[1:]]
    assert [(r["start_s"], r["start_time"], r["end_time"], r["site"], r["latitude"]) for r in timed[2:4]] == [
        ("20", "2026-06-01T05:00:20.000+02:00", "2026-06-01T05:00:40.000+02:00", "N", "52.5")] * 2
    assert {r["start_time"][:10] for r in timed[6:]} == {"2026-06-02"}
    assert main(["times", "--table", str(survey / "emb.parquet"), "--out", str(survey / "emb.timed.parquet"),
                 *where]) == 0
    original, placed = pq.read_table(survey / "emb.parquet"), pq.read_table(survey / "emb.timed.parquet")
    assert placed.select(original.column_names).equals(original)  # embeddings and all untouched
    assert placed.schema.metadata == original.schema.metadata  # the run's settings kept
    assert placed.column("site").to_pylist() == ["S"] * len(original)
    assert placed.column("start_time").to_pylist()[:2] == ["2026-06-01T05:00:00.000+02:00",
                                                            "2026-06-01T05:00:20.000+02:00"]
    capsys.readouterr()
    assert main(["times", "--table", str(survey / "top.timed.csv"), "--out", str(survey / "again.csv")]) == EXIT_USAGE
    assert "already has the column(s) start_time" in _error_line(capsys)
    assert main(["times", str(survey / "north"), "--table", str(survey / "top.csv"), "--out", "x.csv"]) == EXIT_USAGE
    assert "one of the two" in _error_line(capsys)


def test_scores_lists_unreadable_recordings_and_writes_the_rest(survey, capsys):
    from conftest import FIXTURE

    (survey / "north" / "20260603_050000.WAV").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")  # a header and nothing more
    (survey / "species.txt").write_text("Turdus merula\n", encoding="utf-8")
    out = survey / "asked.csv"
    assert main(["scores", str(survey / "north"), "--checkpoint", str(FIXTURE), "--species", str(survey / "species.txt"),
                 "--window", "20", "--no-progress", "--out", str(out)]) == EXIT_PARTIAL
    assert "1 inputs could not be read" in _error_line(capsys)
    with open(f"{out}.failures.csv", newline="", encoding="utf-8") as handle:
        assert [r["path"] for r in csv.DictReader(handle)] == [str(survey / "north" / "20260603_050000.WAV")]
    with open(out, newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 6  # the two readable recordings, 3 windows each


def test_classify_applies_a_thresholds_file_of_its_own_model_only(survey, capsys, tiny_model):
    """classify --thresholds: probability and detected per asked label (the file's labels by default), the same
    values as the calibration's; a label it has no model of keeps empty cells; another model's file is refused."""
    from avex_hub.monitoring.calibration import LabelCalibration, Thresholds, OK
    from avex_hub.monitoring.scores import read_scores
    from conftest import FIXTURE

    import soundfile as sf
    from conftest import tones

    names = list(json.loads((FIXTURE / "label_map.json").read_text(encoding="utf-8")))
    (survey / "tones").mkdir()
    for i in range(2):  # 3 s and 4 s of tones at 1 s windows: 3 + 4 windows of differing scores
        sf.write(survey / "tones" / f"clip{i}.wav", tones(3 + i, 16000, seed=40 + i), 16000, subtype="FLOAT")
    run = [str(survey / "tones"), "--checkpoint", str(FIXTURE), "--window", "1", "--no-progress"]
    assert main(["classify", *run, "--out", str(survey / "raw.csv"), "--species", f"{names[2]},{names[0]}"]) == 0
    raw = read_scores(survey / "raw.csv")
    threshold = float(np.median(raw.column(names[2])))
    one = LabelCalibration(names[2], OK, intercept=-1.0, slope=1.5, covariance=[[0.1, 0.0], [0.0, 0.1]],
                           threshold=threshold)
    Thresholds(raw.source, 0.9, {names[2]: one}).save(survey / "thresholds.json")

    def rows(out):
        with open(out, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    assert main(["classify", *run, "--out", str(survey / "mine.csv"), "--thresholds",
                 str(survey / "thresholds.json")]) == EXIT_OK
    mine = rows(survey / "mine.csv")
    assert list(mine[0]) == ["file", "channel", "start_s", "end_s", "label", "score", "probability", "detected",
                             "flags"]
    assert {r["label"] for r in mine} == {names[2]} and len(mine) == 7  # the file's label in 7 windows
    score = np.array([float(r["score"]) for r in mine])
    np.testing.assert_allclose(score, raw.column(names[2]), atol=1e-6)
    expected = 1 / (1 + np.exp(-(-1.0 + 1.5 * np.log(score / (1 - score)))))
    np.testing.assert_allclose([float(r["probability"]) for r in mine], expected, atol=1e-6)
    assert [r["detected"] for r in mine] == ["1" if s >= threshold else "0" for s in score]
    assert {"0", "1"} <= {r["detected"] for r in mine}
    both = rows(survey / "both.csv") if main(["classify", *run, "--out", str(survey / "both.csv"), "--species",
                                               f"{names[2]},{names[0]}", "--thresholds",
                                               str(survey / "thresholds.json")]) == EXIT_OK else []
    assert [(r["probability"], r["detected"]) for r in both if r["label"] == names[0]] == [("", "")] * 7
    assert [r["detected"] for r in both if r["label"] == names[2]] == [r["detected"] for r in mine]

    from avex_hub.embed.inference import classify_files

    calibration = Thresholds.load(survey / "thresholds.json")
    result = classify_files(tiny_model, str(survey / "tones"), species=[names[2]], window_s=1, num_workers=0,
                            progress=False)
    result.to_csv(survey / "api.csv", calibration=calibration)
    assert rows(survey / "api.csv") == mine  # the library writes what the command does
    with pytest.raises(ValueError, match="species asked"):
        classify_files(tiny_model, str(survey / "tones"), window_s=1, num_workers=0,
                       progress=False).to_csv(survey / "top.csv", calibration=calibration)

    other = ScoreSource("c" * 64, None, "another", 20.0, 20.0)
    Thresholds(other, 0.9, {names[2]: one}).save(survey / "other.json")
    capsys.readouterr()
    assert main(["classify", *run, "--out", str(survey / "x.csv"), "--thresholds", str(survey / "other.json")]) \
        == EXIT_USAGE
    assert "fitted to scores of another model (weights_sha256: ccc" in _error_line(capsys)
    assert not (survey / "x.csv").exists() and not any((survey / "x.csv.parts").glob("*.npz"))  # no audio read


def test_classify_times_its_rows_where_the_start_is_known_and_leaves_the_rest_empty(survey, capsys):
    """classify --times: start_time/end_time from the AudioMoth comment (the recording's start plus start_s, with
    its offset), empty for a recording without a known start; --timezone without --times is a usage error."""
    from conftest import FIXTURE

    plain_wav(survey / "north" / "unknown.wav", seconds=30.0)
    run = [str(survey / "north"), "--checkpoint", str(FIXTURE), "--window", "20", "--no-progress", "--top-k", "1"]
    assert main(["classify", *run, "--out", str(survey / "timed.csv"), "--times"]) == EXIT_OK
    assert "1 of 3 recordings have no known start" in capsys.readouterr().err
    with open(survey / "timed.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:6] == ["file", "channel", "start_s", "end_s", "start_time", "end_time"]
    times = {(r["file"].rsplit("/", 1)[-1], r["start_s"]): (r["start_time"], r["end_time"]) for r in rows}
    assert times[("20260601_050000.WAV", "20")] == ("2026-06-01T05:00:20.000+02:00", "2026-06-01T05:00:40.000+02:00")
    assert times[("20260602_050000.WAV", "40")] == ("2026-06-02T05:00:40.000+02:00", "2026-06-02T05:01:00.000+02:00")
    assert times[("unknown.wav", "0")] == times[("unknown.wav", "20")] == ("", "")
    assert len(times) == 3 + 3 + 2
    assert main(["classify", *run, "--out", str(survey / "x.csv"), "--timezone", "Europe/Berlin"]) == EXIT_USAGE
    assert "add --times" in _error_line(capsys)
    assert main(["classify", *run, "--out", str(survey / "x.csv"), "--deployments",
                 str(survey / "deployments.csv")]) == EXIT_USAGE
    assert "add --times" in _error_line(capsys)


def test_classify_deployments_put_site_and_position_on_its_rows_as_times_table_does(survey, capsys):
    """classify --times --deployments: site, latitude and longitude after end_time, the cells avex-hub times --table
    writes for the same classify output and deployments table."""
    from conftest import FIXTURE

    run = [str(survey / "north"), str(survey / "south"), "--checkpoint", str(FIXTURE), "--window", "20",
           "--no-progress", "--top-k", "1"]
    deployments = ["--deployments", str(survey / "deployments.csv")]
    assert main(["classify", *run, "--out", str(survey / "placed.csv"), "--times", *deployments]) == EXIT_OK
    assert main(["classify", *run, "--out", str(survey / "plain.csv")]) == EXIT_OK
    assert main(["times", "--table", str(survey / "plain.csv"), "--out", str(survey / "timed.csv"), *deployments]) \
        == EXIT_OK
    with open(survey / "placed.csv", newline="", encoding="utf-8") as handle:
        placed = list(csv.DictReader(handle))
    with open(survey / "timed.csv", newline="", encoding="utf-8") as handle:
        timed = list(csv.DictReader(handle))
    assert list(placed[0])[4:9] == ["start_time", "end_time", "site", "latitude", "longitude"]
    columns = ["file", "start_s", "start_time", "end_time", "site", "latitude", "longitude"]
    assert [[r[c] for c in columns] for r in placed] == [[r[c] for c in columns] for r in timed]
    assert {(r["site"], r["latitude"], r["longitude"]) for r in placed} == {("N", "52.5", "13.4"),
                                                                             ("S", "52.4", "13.3")}
    assert len(placed) == 4 * 3


def test_classify_raven_tables_carry_the_times_of_its_rows(survey, capsys):
    """classify --times --raven: every selection has start_time and end_time columns (the names of events' Raven
    tables), the values of the CSV's rows for that window, empty for a recording without a known start; without
    --times the tables keep their columns."""
    from conftest import FIXTURE

    plain_wav(survey / "north" / "unknown.wav", seconds=30.0)
    run = [str(survey / "north"), "--checkpoint", str(FIXTURE), "--window", "20", "--no-progress", "--top-k", "1"]
    assert main(["classify", *run, "--out", str(survey / "timed.csv"), "--times", "--raven",
                 str(survey / "raven")]) == EXIT_OK
    with open(survey / "timed.csv", newline="", encoding="utf-8") as handle:
        rows = {(r["file"].rsplit("/", 1)[-1], float(r["start_s"])): (r["start_time"], r["end_time"])
                for r in csv.DictReader(handle)}
    selections = {}
    for table in (survey / "raven").iterdir():
        with open(table, newline="", encoding="utf-8") as handle:
            lines = list(csv.DictReader(handle, delimiter="\t"))
        assert list(lines[0])[-3:] == ["Flags", "start_time", "end_time"]
        stem = table.name.split(".Table.")[0]
        selections.update({(stem, float(r["Begin Time (s)"])): (r["start_time"], r["end_time"]) for r in lines})
    assert selections == {(f.rsplit(".", 1)[0], s): t for (f, s), t in rows.items()} and len(selections) == 8
    assert selections[("20260602_050000", 20.0)] == ("2026-06-02T05:00:20.000+02:00", "2026-06-02T05:00:40.000+02:00")
    assert selections[("unknown", 0.0)] == ("", "")
    assert main(["classify", *run, "--out", str(survey / "plain.csv"), "--raven", str(survey / "plain")]) == EXIT_OK
    header = (survey / "plain" / "unknown.Table.1.selections.txt").read_text(encoding="utf-8").splitlines()[0]
    assert header.split("\t")[-2:] == ["Score", "Flags"]
