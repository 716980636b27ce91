"""``avex-hub embed --times``: absolute time (and with a deployments table site and position) on every row of the
Parquet and NPZ outputs, the cells ``avex-hub times --table`` appends, from the one clock classify --times uses; a
resumed run writes them from the shards it has, its recorded settings unchanged; readers of embed Parquet (``scores``)
read a timed file as they read the plain one; ``times --table`` refuses a table that holds times already."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from avex_hub.cli import EXIT_OK, EXIT_USAGE, main
from conftest import FIXTURE
from recorder_files import audiomoth_wav, plain_wav

COMMENT = "Recorded at 05:00:00 01/06/2026 (UTC+2) by AudioMoth AAAA000000000001 at medium gain while battery was 4.2V"
RUN = ["--checkpoint", str(FIXTURE), "--window", "20", "--no-progress"]


@pytest.fixture
def site(tmp_path):
    """Folder ``north`` (site N in the deployments table): an AudioMoth recording of 40 s (2 windows of 20 s) and a
    plain WAV of 30 s whose start nothing tells (2 windows)."""
    audiomoth_wav(tmp_path / "north" / "20260601_050000.WAV", COMMENT, serial="AAAA000000000001", seconds=40.0,
                  rate=16000)
    plain_wav(tmp_path / "north" / "unknown.wav", seconds=30.0)
    (tmp_path / "deployments.csv").write_text("folder,recorder,site,latitude,longitude,start,end,timezone\n"
                                              "north,,N,52.5,13.4,2026-05-20,2026-06-30,Europe/Berlin\n",
                                              encoding="utf-8")
    return tmp_path


def _error_line(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("avex-hub: error:")]
    assert len(errors) == 1, errors
    return errors[0]


def test_embed_times_writes_the_columns_times_table_appends_and_resumes_from_plain_shards(site, capsys):
    where = ["--deployments", str(site / "deployments.csv")]
    assert main(["embed", str(site / "north"), "--out", str(site / "timed.parquet"), "--times", *where, *RUN]) == 0
    assert "1 of 2 recordings have no known start" in capsys.readouterr().err
    timed = pq.read_table(site / "timed.parquet")
    assert timed.column_names[-6:] == ["embedding", "start_time", "end_time", "site", "latitude", "longitude"]
    rows = {(r["file"].rsplit("/", 1)[-1], r["start_s"]): r for r in timed.to_pylist()}
    assert [(k, r["start_time"], r["end_time"]) for k, r in rows.items()] == [
        (("20260601_050000.WAV", 0.0), "2026-06-01T05:00:00.000+02:00", "2026-06-01T05:00:20.000+02:00"),
        (("20260601_050000.WAV", 20.0), "2026-06-01T05:00:20.000+02:00", "2026-06-01T05:00:40.000+02:00"),
        (("unknown.wav", 0.0), "", ""), (("unknown.wav", 20.0), "", "")]  # no start known: empty, never a guess
    assert {(r["site"], r["latitude"], r["longitude"]) for r in rows.values()} == {("N", 52.5, 13.4)}

    assert main(["embed", str(site / "north"), "--out", str(site / "plain.parquet"), *RUN]) == EXIT_OK
    plain = pq.read_table(site / "plain.parquet")
    assert "start_time" not in plain.column_names  # without --times nothing changes
    assert main(["times", "--table", str(site / "plain.parquet"), "--out", str(site / "table.parquet"), *where]) == 0
    table = pq.read_table(site / "table.parquet")
    assert timed.equals(table, check_metadata=True)  # the same file: columns, types, values and the run's settings
    assert timed.schema.metadata == plain.schema.metadata

    capsys.readouterr()  # the plain run's shards resumed with --times: nothing computed, --out written again
    assert main(["embed", str(site / "north"), "--out", str(site / "plain.parquet"), "--times", *where, *RUN]) == 0
    assert "files skipped (done by an earlier run): 2, failed: 0" in capsys.readouterr().err
    assert pq.read_table(site / "plain.parquet").equals(table, check_metadata=True)

    capsys.readouterr()
    assert main(["times", "--table", str(site / "timed.parquet"), "--out", str(site / "again.parquet"), *where]) \
        == EXIT_USAGE
    assert "already has the column(s) start_time, end_time, site, latitude, longitude" in _error_line(capsys)
    assert not (site / "again.parquet").exists()


def test_scores_read_a_timed_embed_parquet_as_the_plain_one(site, capsys):
    names = list(json.loads((FIXTURE / "label_map.json").read_text(encoding="utf-8")))
    (site / "species.txt").write_text(f"{names[1]}\n{names[3]}\n", encoding="utf-8")
    for name, times in (("plain", []), ("timed", ["--times"])):
        assert main(["embed", str(site / "north"), "--out", str(site / f"{name}.parquet"), *times, *RUN]) == 0
        assert main(["scores", str(site / f"{name}.parquet"), "--checkpoint", str(FIXTURE), "--species",
                     str(site / "species.txt"), "--out", str(site / f"{name}.csv"), "--no-progress"]) == EXIT_OK
    timed = (site / "timed.csv").read_text(encoding="utf-8")
    assert timed == (site / "plain.csv").read_text(encoding="utf-8")
    with open(site / "timed.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 4  # 2 recordings x 2 windows


def test_embed_npz_times_and_the_library_write_the_same_cells(site, tiny_model, capsys):
    from avex_hub.embed.inference import embed_files
    from avex_hub.monitoring.deployments import Deployments
    from avex_hub.monitoring.recordings import PLACE_COLUMNS, WindowClock, by_file, describe_recordings

    assert main(["embed", str(site / "north"), "--out", str(site / "timed.npz"), "--times", *RUN]) == EXIT_OK
    with np.load(site / "timed.npz", allow_pickle=False) as data:
        npz = {k: data[k] for k in data.files}
    assert "site" not in npz  # --deployments adds site and position
    assert npz["start_time"].tolist() == ["2026-06-01T05:00:00.000+02:00", "2026-06-01T05:00:20.000+02:00", "", ""]
    assert npz["end_time"].tolist()[:2] == ["2026-06-01T05:00:20.000+02:00", "2026-06-01T05:00:40.000+02:00"]
    assert npz["file"].tolist()[2:] == [str(site / "north" / "unknown.wav")] * 2

    result = embed_files(tiny_model, [str(site / "north")], window_s=20, num_workers=0, progress=False)
    recordings = describe_recordings({f.path: f.duration_s for f in result.files},
                                     deployments=Deployments.read(site / "deployments.csv"))
    result.to_npz(site / "api.npz", clock=WindowClock(by_file(recordings), PLACE_COLUMNS[:2]))
    with np.load(site / "api.npz", allow_pickle=False) as data:
        assert {k: data[k].tolist() for k in ("file", "start_time", "end_time")} == {
            k: npz[k].tolist() for k in ("file", "start_time", "end_time")}
    result.to_npz(site / "placed.npz", clock=WindowClock(by_file(recordings)))
    with np.load(site / "placed.npz", allow_pickle=False) as data:
        assert data["site"].tolist() == ["N"] * 4 and data["latitude"].tolist() == [52.5] * 4
    result.to_parquet(site / "api.parquet", clock=WindowClock(by_file(recordings)))
    assert main(["embed", str(site / "north"), "--out", str(site / "cli.parquet"), "--times", "--deployments",
                 str(site / "deployments.csv"), *RUN]) == EXIT_OK
    assert pq.read_table(site / "api.parquet").equals(pq.read_table(site / "cli.parquet"))  # the command's rows
    with pytest.raises(ValueError, match="a window clock's columns are"):
        WindowClock({}, ("start_time", "site"))
