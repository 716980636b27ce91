"""The benchmark readers on stand-ins written in each published layout (tests/benchmark_standins.py), awkward parts
included: labels with commas and numbers, labels outside the list, a split missing, files listed but absent,
overlapping annotations, recordings with no events, noise-only event clusters, segments without birds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import benchmark_standins as standin
from avex_hub.suites.beans import read_beans_set
from avex_hub.suites.beans_sets import beans_set
from avex_hub.suites.data import label_text
from avex_hub.suites.detection import label_windows, window_starts

pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


# -- BEANS classification ---------------------------------------------------------------------------------------
def _watkins(root, **kwargs):
    spec = beans_set("watkins")
    labels = ["Beluga,_White_Whale", "Fin,_Finback_Whale", "Walrus"]  # commas: quoted by the CSV writer
    standin.beans_classification(root, spec.folder, spec.file, labels, rate=44100, **kwargs)
    return spec, labels


def test_beans_classification_reads_pandas_csvs_with_beans_label_order(tmp_path):
    spec, labels = _watkins(tmp_path, per_class={"train": 2, "valid": 1, "test": 1})
    data = read_beans_set(tmp_path, "watkins")
    assert data.labels == list(spec.labels) and len(data.labels) == 31  # BEANS's list, in its order
    assert data.sizes() == {"train": 6, "val": 3, "test": 3} and not data.multilabel and not data.control
    test = data.splits["test"]
    assert [test.labels[i] for i in test.targets] == labels  # one clip per label, in file order
    item = test[0]
    assert item["audio"].shape == (3 * 16000,)  # BEANS's 3 s for watkins, at the model's rate
    assert (~item["padding_mask"]).sum() == 1.5 * 16000  # a 1.5 s clip: the rest is zero padding, masked
    assert data.notes == [] and data.failures == [] and data.audio_seconds() == 12 * 3.0


def test_beans_classification_without_a_valid_file_holds_out_train(tmp_path):
    _watkins(tmp_path, per_class={"train": 5, "test": 1}, splits=("train", "test"))
    data = read_beans_set(tmp_path, "watkins", val_fraction=0.2, seed=3)
    assert data.sizes() == {"train": 12, "val": 3, "test": 3}  # one of each label's five
    assert sorted(data.splits["val"].targets.tolist()) == [
        data.labels.index(label) for label in ("Beluga,_White_Whale", "Fin,_Finback_Whale", "Walrus")]
    assert "no annotations.valid.csv" in data.notes[0] and "seed 3" in data.notes[0]
    again = read_beans_set(tmp_path, "watkins", val_fraction=0.2, seed=3)
    assert [i.path for i in again.splits["val"].items] == [i.path for i in data.splits["val"].items]


def test_beans_classification_missing_split_labels_outside_the_list_and_missing_files(tmp_path):
    _watkins(tmp_path, per_class={"train": 1, "valid": 1}, splits=("train", "valid"))
    with pytest.raises(FileNotFoundError, match=r"no test split at .*annotations.test.csv.*download_data.sh"):
        read_beans_set(tmp_path, "watkins")
    with pytest.raises(FileNotFoundError, match="Kaggle"):
        read_beans_set(tmp_path, "cbi")
    _watkins(tmp_path, per_class={"train": 1, "valid": 1, "test": 1}, extra={"test": ["Weddell_Seal"]})
    with pytest.raises(ValueError, match=r"not in BEANS's list for watkins.*'Weddell_Seal' \(line 5\)"):
        read_beans_set(tmp_path, "watkins")
    _watkins(tmp_path, per_class={"train": 1, "valid": 1, "test": 2})
    gone = tmp_path / "data/watkins/audio/test_1.wav"
    gone.unlink()
    data = read_beans_set(tmp_path, "watkins")
    assert data.sizes()["test"] == 5 and data.failures == [(str(gone), "file not found")]


def test_beans_numeric_labels_match_as_text(tmp_path):
    spec = beans_set("esc50")
    standin.beans_classification(tmp_path, spec.folder, spec.file, ["0", "7"], per_class={"train": 2, "valid": 1,
                                                                                         "test": 1})
    csv_path = tmp_path / spec.path("test")
    csv_path.write_text(csv_path.read_text().replace(",7\n", ",7.0\n"))  # a float column, as pandas may write it
    data = read_beans_set(tmp_path, "esc50")
    assert data.control and data.splits["test"].targets.tolist() == [0, 7]


# -- BEANS detection ----------------------------------------------------------------------------------------------
_EVENTS = [{"st": 0.5, "ed": 1.8, "label": "AMRE"}, {"st": 1.0, "ed": 3.5, "label": "AMRE"},  # overlapping
           {"st": 3.2, "ed": 3.6, "label": "CALL"}]


def test_beans_detection_windows_and_labels(tmp_path):
    spec = beans_set("dcase")
    recordings = [{"name": "calls", "length": 6.0, "annotations": _EVENTS},
                  {"name": "quiet", "length": 4.5, "annotations": []},  # no events: all windows negative
                  {"name": "short", "length": 1.5, "annotations": [{"st": 0.2, "ed": 1.0, "label": "Q"}]}]
    standin.beans_detection(tmp_path, spec.folder, {split: recordings for split in ("train", "valid", "test")})
    data = read_beans_set(tmp_path, "dcase")
    test = data.splits["test"]
    assert data.multilabel and data.sizes() == {"train": 9, "val": 9, "test": 9}  # 5 + 3 + 1 windows
    assert [(i.path.name, i.start_s, i.origin.rsplit(", ", 1)[1]) for i in test.items][:6] == [
        ("calls.wav", 0.0, "0-2 s"), ("calls.wav", 1.0, "1-3 s"), ("calls.wav", 2.0, "2-4 s"),
        ("calls.wav", 3.0, "3-5 s"), ("calls.wav", 4.0, "4-6 s"), ("quiet.wav", 0.0, "0-2 s")]
    assert all(i.end_s is None for i in test.items)  # a window is its start and the clip length
    starts = window_starts(6.0, 2, 1)
    expected = label_windows(starts, starts + 2, [0.5, 1.0, 3.2], [1.8, 3.5, 3.6],
                             [spec.labels.index("AMRE")] * 2 + [spec.labels.index("CALL")], len(spec.labels))
    assert (test.targets[:5] == expected).all()
    assert test.targets[5:8].sum() == 0 and test.targets[8, spec.labels.index("Q")] == 1
    short = test[8]  # the one window of a 1.5 s recording: 0.5 s of zero padding, masked
    assert short["audio"].shape == (32000,) and int(short["padding_mask"].sum()) == 8000


def test_beans_detection_unknown_labels_map_or_fail(tmp_path):
    recs = [{"name": "a", "length": 3.0, "annotations": [{"st": 0.0, "ed": 2.0, "label": "WIWA"},
                                                          {"st": 1.0, "ed": 3.0, "label": "AMCR"}]}]
    spec = beans_set("enabirds")  # maps labels outside its list to OTHR
    standin.beans_detection(tmp_path, spec.folder, {s: recs for s in ("train", "valid", "test")})
    data = read_beans_set(tmp_path, "enabirds")
    first = data.splits["test"].targets[0]
    assert first[spec.labels.index("OTHR")] == 1 and first.sum() == 2  # window 0-2: WIWA -> OTHR, and AMCR
    gibbons = beans_set("hainan-gibbons")  # unknown label 1; labels are numbers in the JSON
    numbered = [{"name": "g", "length": 4.0, "annotations": [{"st": 0.0, "ed": 4.0, "label": 4},
                                                              {"st": 0.0, "ed": 4.0, "label": 3.0}]}]
    standin.beans_detection(tmp_path, gibbons.folder, {s: numbered for s in ("train", "valid", "test")})
    assert read_beans_set(tmp_path, "hainan-gibbons").splits["test"].targets.tolist() == [[1.0, 0.0, 1.0]]
    rfcx = beans_set("rfcx")  # no unknown label: BEANS raises, so do we, naming the label and where
    bad = [{"name": "r", "length": 10.0, "annotations": [{"st": 0.0, "ed": 1.0, "label": 30}]}]
    standin.beans_detection(tmp_path, rfcx.folder, {s: bad for s in ("train", "valid", "test")})
    with pytest.raises(ValueError, match=r"'30' \(train.jsonl line 1\)"):
        read_beans_set(tmp_path, "rfcx")


def test_beans_detection_without_a_valid_file_holds_out_whole_windows_with_their_labels(tmp_path):
    spec = beans_set("dcase")
    recordings = [{"name": "calls", "length": 6.0, "annotations": _EVENTS},
                  {"name": "quiet", "length": 5.0, "annotations": []}]
    standin.beans_detection(tmp_path, spec.folder, {"train": recordings, "test": recordings})
    data = read_beans_set(tmp_path, "dcase", val_fraction=0.25, seed=1)
    assert data.multilabel and data.sizes() == {"train": 7, "val": 2, "test": 9}  # 5 + 4 windows; 25% of 9 is 2
    assert "no valid.jsonl" in data.notes[0] and "seed 1" in data.notes[0] and "may overlap a train window" in \
        data.notes[0]
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    expected = {(i.path.name, i.start_s): row for i, row in zip(test.items, test.targets.tolist())}  # same files
    held = [((i.path.name, i.start_s), row) for split in (train, val) for i, row in zip(split.items,
                                                                                       split.targets.tolist())]
    assert sorted(key for key, _ in held) == sorted(expected)  # every train window once, in train or in val
    assert all(row == expected[key] for key, row in held)  # a held-out window keeps its multi-hot labels
    assert val.targets.shape == (2, len(spec.labels))
    again = read_beans_set(tmp_path, "dcase", val_fraction=0.25, seed=1)
    assert [(i.path.name, i.start_s) for i in again.splits["val"].items] == [(i.path.name, i.start_s)
                                                                             for i in val.items]


def test_beans_detection_refuses_lines_that_are_not_the_layout(tmp_path):
    spec = beans_set("hiceas")
    standin.beans_detection(tmp_path, spec.folder, {s: [{"name": "h", "length": 10.0, "annotations": []}]
                                                    for s in ("train", "valid", "test")})
    train = tmp_path / spec.path("train")
    train.write_text(train.read_text() + "\n" + json.dumps({"path": "x.wav", "annotations": []}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl line 3: no \['length'\]"):
        read_beans_set(tmp_path, "hiceas")
    train.write_text("{not json\n")
    with pytest.raises(ValueError, match="train.jsonl line 1: not a JSON object"):
        read_beans_set(tmp_path, "hiceas")
    train.write_text(json.dumps({"path": "x.wav", "length": 10, "annotations": [{"st": 3, "ed": 1, "label": 1}]}))
    with pytest.raises(ValueError, match="ends before it starts"):
        read_beans_set(tmp_path, "hiceas")
    for bad, found in (({"length": "ten", "annotations": []}, "'ten'"),
                       ({"length": 10, "annotations": [{"st": "a", "ed": 1, "label": 1}]}, "'a'"),
                       ({"length": None, "annotations": []}, "None")):
        train.write_text(json.dumps({"path": "x.wav", **bad}) + "\n")
        with pytest.raises(ValueError, match=rf"train.jsonl line 1: length, st and ed must be seconds.*found {found}"):
            read_beans_set(tmp_path, "hiceas")
    for annotations in ({"st": 1}, [[0, 1, 1]]):
        train.write_text(json.dumps({"path": "x.wav", "length": 10, "annotations": annotations}) + "\n")
        with pytest.raises(ValueError, match="train.jsonl line 1: (annotations must be a list|an annotation without)"):
            read_beans_set(tmp_path, "hiceas")


# -- BirdSet ------------------------------------------------------------------------------------------------------
def _hsn(root):
    train = [  # events and clusters as BirdSet's metadata has them; -1 is its noise cluster
        {"file": "XC1.ogg", "seconds": 12.0, "ebird_code": "gcrfin", "ebird_code_multilabel": ["gcrfin"],
         "detected_events": [[1.0, 1.5], [6.0, 7.0], [8.0, 8.4]], "event_cluster": [-1, 0, 0], "length": 12},
        {"file": "XC2.ogg", "seconds": 4.0, "ebird_code": "amepip", "ebird_code_multilabel": [],
         "detected_events": [[0.5, 1.0]], "event_cluster": [-1], "length": 4},  # noise only: kept, the only one
        {"file": "XC3.ogg", "seconds": 8.0, "ebird_code": "amepip", "ebird_code_multilabel": ["amepip"],
         "detected_events": [], "event_cluster": [], "length": 8},  # no event: the first 5 s
        {"file": "XC4.ogg", "seconds": 6.0, "ebird_code": "gcrfin", "ebird_code_multilabel": ["gcrfin"],
         "detected_events": [[5.5, 6.0]], "event_cluster": [2], "length": 6},  # near the end: clamped
        {"file": "XC5.ogg", "seconds": 6.0, "ebird_code": "whcspa", "ebird_code_multilabel": ["whcspa"],
         "detected_events": [[0.0, 1.0]], "event_cluster": [0], "length": 6},
    ]
    test = [{"file": "HSN_001_000_005.ogg", "ebird_code_multilabel": ["gcrfin", "amepip"]},
            {"file": "HSN_001_005_010.ogg", "ebird_code_multilabel": []},  # no bird in this segment
            {"file": "HSN_001_010_015.ogg", "ebird_code_multilabel": ["mouchi"]}]  # never in train
    standin.birdset(root, "HSN", train, test)


def test_birdset_reads_metadata_parquet_and_extracted_shards(tmp_path):
    from avex_hub.suites.birdset import read_birdset

    _hsn(tmp_path)
    data = read_birdset(tmp_path, "HSN", val_fraction=0.2, seed=0)
    assert data.multilabel and data.labels == ["amepip", "gcrfin", "mouchi", "whcspa"]
    assert data.sizes() == {"train": 4, "val": 1, "test": 3} and "20%" in data.notes[0]
    everything = data.splits["train"].items + data.splits["val"].items
    clips = {item.path.name: (item.start_s, item.labels) for item in everything}  # each 5 s from its start
    assert clips == {"XC1.ogg": (4.0, ("gcrfin",)),       # centred on 6-7 s, the first of cluster 0
                     "XC2.ogg": (0.0, ("amepip",)),       # a 4 s file: from 0, the last second padded
                     "XC3.ogg": (0.0, ("amepip",)),       # ebird_code where the multilabel list is empty
                     "XC4.ogg": (1.0, ("gcrfin",)),
                     "XC5.ogg": (0.0, ("whcspa",))}
    masks = [split[i]["padding_mask"] for split in (data.splits["train"], data.splits["val"])
             for i, item in enumerate(split.items) if item.path.name == "XC2.ogg"]
    assert [int(mask.sum()) for mask in masks] == [16000]  # the 4 s file's fifth second is padding
    assert all(item.path.parent.name == "HSN_train_shard_0001" for item in everything)  # found by name
    test = data.splits["test"]
    assert test.targets.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert test[1]["audio"].shape == (5 * 16000,) and data.failures == []


def test_birdset_says_what_is_missing(tmp_path):
    from avex_hub.suites.birdset import read_birdset, train_clip

    with pytest.raises(FileNotFoundError, match=r"no .*PER_metadata_train.parquet; download PER/"):
        read_birdset(tmp_path, "PER")
    with pytest.raises(KeyError, match="HSN, NBP"):
        read_birdset(tmp_path, "XCL")
    _hsn(tmp_path)
    (tmp_path / "HSN/extracted/HSN_test_5s_shard_0001/HSN_001_005_010.ogg").unlink()  # a shard not extracted
    data = read_birdset(tmp_path, "HSN")
    assert data.sizes()["test"] == 2 and data.failures[0][1] == "file not found"
    assert train_clip([[2.0, 3.0], [9.0, 9.5]], [1, 1], None) == (0.0, 5.0)  # no length: only the start clamps
    assert train_clip([[20.0, 22.0]], None, 21.0) == (16.0, 21.0)  # missing clusters: one cluster
    assert train_clip([[2.0, 9.0]], [0], 20.0) == (2.0, 7.0)  # an event longer than 5 s: its first 5 s


def test_birdset_reads_file_names_from_an_unnamed_index_or_full_paths_and_says_what_is_wrong(tmp_path):
    import pyarrow.parquet as pq

    from avex_hub.suites.birdset import read_birdset

    _hsn(tmp_path)
    path = tmp_path / "HSN" / "HSN_metadata_test_5s.parquet"
    table = pq.read_table(path)
    names = table.column("filepath").to_pylist()
    # pandas writes an unnamed index as __index_level_0__; the index holds where the file was when it was made
    where = [f"C:\\birdset\\HSN\\{names[0]}", f"/cache/HSN/test_5s/{names[1]}", names[2]]
    unnamed = table.drop(["filepath"]).append_column("__index_level_0__", [where]).replace_schema_metadata(None)
    pq.write_table(unnamed, path)
    data = read_birdset(tmp_path, "HSN")
    assert [i.path.name for i in data.splits["test"].items] == names and data.failures == []
    assert data.splits["test"].targets.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    pq.write_table(unnamed.drop(["__index_level_0__"]), path)
    with pytest.raises(ValueError, match=r"HSN_metadata_test_5s.parquet: no 'filepath' column or index; found "
                                         r"\['ebird_code_multilabel'\]"):
        read_birdset(tmp_path, "HSN")
    path.unlink()  # the test split missing
    with pytest.raises(FileNotFoundError, match=r"no .*HSN_metadata_test_5s.parquet; download HSN/"):
        read_birdset(tmp_path, "HSN")


# -- manifests (individual ID, vocal repertoire) -----------------------------------------------------------------
def _manifest(root, rows):
    lines = ["set,path,label,split,start_s,end_s"]
    for i, (set_name, label, split, times) in enumerate(rows):
        standin.write_wav(root / set_name / f"{i}.wav", 2.0, 22050, 300.0 + 200 * int(label), seed=i)
        lines.append(f"{set_name},{set_name}/{i}.wav,{label},{split},{times}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_manifest_sets_hold_out_val_and_cut_the_given_seconds(tmp_path):
    from avex_hub.suites.manifest import read_manifest_set

    rows = [("pipit", label, "train", ",") for label in "1212"] * 2 + [("pipit", "1", "test", "0.5,1.5"),
                                                                       ("pipit", "2", "test", ",")]
    rows += [("macaques", "3", "test", ","), ("killer_whale", "1", "test", ","), ("killer_whale", "2", "test", ",")]
    _manifest(tmp_path, rows)
    data = read_manifest_set(tmp_path, "pipit", val_fraction=0.25, seed=0)
    assert data.sizes() == {"train": 6, "val": 2, "test": 2} and "no val rows" in data.notes[0]
    cut = data.splits["test"][0]
    assert int((~cut["padding_mask"]).sum()) == 16000  # 0.5-1.5 s of the file, then padding to 5 s
    repertoire = read_manifest_set(tmp_path, "killer_whale", roles=("test",))
    assert list(repertoire.splits) == ["test"] and repertoire.labels == ["1", "2"]
    with pytest.raises(FileNotFoundError, match=r"set macaques has no \['train'\] rows"):
        read_manifest_set(tmp_path, "macaques")
    with pytest.raises(FileNotFoundError, match=r"no rows with set == 'chiffchaff'.*'killer_whale'"):
        read_manifest_set(tmp_path, "chiffchaff")
    (tmp_path / "manifest.csv").write_text("set,path,label,split,start_s,end_s\npipit,a.wav,1,train,2,1\n")
    with pytest.raises(ValueError, match=r"line 2: end_s=1.0 must be after start_s=2.0"):
        read_manifest_set(tmp_path, "pipit")
    (tmp_path / "manifest.csv").write_text("set,path,label,split\npipit,a.wav,1,holdout\n")
    with pytest.raises(ValueError, match=r"split must be train, val or test; not so on manifest.csv line 2"):
        read_manifest_set(tmp_path, "pipit")
    (tmp_path / "manifest.csv").write_text("path,label,split\na.wav,1,train\n")
    with pytest.raises(ValueError, match=r"needs the columns set, path, label and split"):
        read_manifest_set(tmp_path, "pipit")
    with pytest.raises(FileNotFoundError, match="write the manifest"):
        read_manifest_set(tmp_path / "elsewhere", "pipit")


# -- BEANS-Zero --------------------------------------------------------------------------------------------------
def test_beans_zero_source_is_split_as_the_tutorials_split_it(tmp_path):
    from avex_hub.suites.beans_zero import read_beans_zero
    from avex_hub.tutorial import fetch_beans_zero

    rows = [{"id": f"w{i}", "dataset_name": "watkins", "label": ["Walrus", "Sperm Whale"][i % 2], "rate": 8000,
             "seconds": 1.0, "pitch": 300.0 + 300 * (i % 2)} for i in range(8)]
    rows += [{"id": "e0", "dataset_name": "esc50", "label": "dog", "rate": 16000, "seconds": 1.0, "pitch": 500.0}]
    rows += [{"id": f"d{i}", "dataset_name": "dogs", "label": ["Zoe", "Rudy"][i % 2], "rate": 16000, "seconds": 1.0,
              "pitch": 400.0} for i in range(4)]  # two clips per label: too few to draw a val split
    standin.beans_zero_shard(tmp_path / "shards" / "shard-00000.parquet", rows)
    data = read_beans_zero(tmp_path / "shards", "watkins", work=tmp_path / "work", seed=0)
    manifest = fetch_beans_zero("watkins", tmp_path / "work" / "beans-zero" / "watkins", source="unused")  # written
    split = {line.split(",")[0]: line.split(",")[2] for line in manifest.read_text().splitlines()[1:]}
    assert data.labels == ["Sperm Whale", "Walrus"] and data.sizes() == {"train": 4, "val": 2, "test": 2}
    assert {str(i.path.relative_to(manifest.parent)): role for role, d in data.splits.items()
            for i in d.items} == split
    with pytest.raises(ValueError, match="no rows with dataset_name == 'humbugdb'"):
        read_beans_zero(tmp_path / "shards", "humbugdb", work=tmp_path / "work")
    with pytest.raises(ValueError, match=r"BEANS-Zero dogs: no val clips in the split drawn \(a label needs "
                                         r"three clips.*more clips per label"):
        read_beans_zero(tmp_path / "shards", "dogs", work=tmp_path / "work")


# -- labels as text ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [(3, "3"), (3.0, "3"), (np.int64(7), "7"), (" 111 ", "111"), ("2.0", "2"),
                                         ("Beluga,_White_Whale", "Beluga,_White_Whale"), ("1e3", "1e3"),
                                         ("an dirus", "an dirus"), (2.5, "2.5"), (math.inf, "inf")])
def test_label_text_makes_whole_numbers_and_text_comparable(value, text):
    assert label_text(value) == text


def test_beans_sets_hold_beans_label_counts_windows_and_controls():
    from avex_hub.suites.beans_sets import BEANS_SETS

    # num_labels, max_duration or window/shift, and unknown_label of each set in BEANS's datasets.yml
    expected = {"esc50": (50, 5, None), "speech-commands": (35, 1, None), "watkins": (31, 3, None),
                "bats": (10, 5, None), "cbi": (264, 10, None), "dogs": (10, 10, None), "humbugdb": (14, 3, None),
                "dcase": (18, (2, 1), None), "enabirds": (34, (2, 1), "OTHR"), "hiceas": (1, (10, 5), None),
                "rfcx": (24, (10, 5), None), "hainan-gibbons": (3, (4, 2), "1")}
    found = {s.name: (len(s.labels), s.clip_s if s.task == "classification" else (s.window_s, s.shift_s),
                      s.unknown_label) for s in BEANS_SETS}
    assert found == expected
    assert all(len(set(s.labels)) == len(s.labels) for s in BEANS_SETS)
    assert [s.name for s in BEANS_SETS if s.control] == ["esc50", "speech-commands"]
    assert beans_set("hiceas").path("val") == "data/hiceas/valid.jsonl"
