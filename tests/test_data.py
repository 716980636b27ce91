"""AudioDataset: folders and manifests in, 16 kHz mono clips out; every failure named and counted."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.audio.decoding import AudioDecodeError
from avex_hub.audio.datasets import AudioDataset, AudioItem
from avex_hub.embed.inference import find_audio_files
from avex_hub.audio.synthetic import make_synthetic_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """24 one-second clips at 16, 22.05 and 48 kHz, stereo, a quarter multi-label, one 8 s annotated recording."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_species=3, individuals_per_species=2,
                                  clips_per_individual=4, clip_s=1.0, sample_rate=[16000, 22050, 48000],
                                  stereo=True, multilabel_fraction=0.25, num_long_recordings=1,
                                  long_recording_s=8.0, seed=0)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """A single-label mono dataset: 2 species x 2 individuals x 3 clips of 1 s."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("single"), num_species=2, individuals_per_species=2,
                                  clips_per_individual=3, clip_s=1.0, seed=1)


def write_manifest(path, rows, header=("path", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_manifest_dataset_mixes_rates_and_channels_to_16k_mono(synth):
    ds = AudioDataset.from_manifest(synth.manifest, clip_s=None)
    assert len(ds) == synth.num_clips and ds.multilabel and ds.labels == sorted(synth.labels)
    rates = set()
    for i in range(len(ds)):
        item = ds[i]
        rates.add(sf.info(item["path"]).samplerate)
        assert item["audio"].dtype == torch.float32 and item["audio"].shape == (16000,)
        assert not item["padding_mask"].any() and item["index"] == i and item["start_s"] == 0.0
        assert item["target"].shape == (3,) and item["target"].sum() >= 1
        assert {"individual", "call_type", "split"} <= set(item)
    assert rates == {16000, 22050, 48000}
    assert ds.targets.shape == (len(ds), 3) and (ds.targets.sum(1) >= 2).sum() == round(0.25 * len(ds))


def test_label_order_from_labels_json_and_shared_across_splits(synth):
    train = AudioDataset.from_manifest(synth.manifest, label_map=synth.labels_file, split="train")
    test = AudioDataset.from_manifest(synth.manifest, split=["val", "test"])
    assert train.labels == synth.labels and train.label_to_index == {n: i for i, n in enumerate(synth.labels)}
    assert test.labels == sorted(synth.labels) and test.multilabel  # taken from all rows, not only these
    assert len(train) + len(test) == synth.num_clips
    with pytest.raises(ValueError, match=r"split \['tst'\]; splits present: \['test', 'train', 'val'\]"):
        AudioDataset.from_manifest(synth.manifest, split="tst")


def test_single_label_items_and_targets(single):
    ds = AudioDataset.from_manifest(single.manifest, label_map=single.labels, clip_s=1.0)
    assert not ds.multilabel and ds.num_classes == 2
    labels = [int(ds[i]["label"]) for i in range(len(ds))]
    assert labels == ds.targets.tolist() == [0] * 6 + [1] * 6
    individual = AudioDataset.from_manifest(single.manifest, label_column="individual")
    item = individual[0]  # the species column, a reserved name here, comes back as meta_label
    assert individual.num_classes == 4 and individual.labels[int(item["label"])] == "sweepus_ascendens_00"
    assert item["meta_label"] == "Sweepus ascendens" and "individual" not in item


def test_folder_dataset_labels_from_class_folders(synth, tmp_path):
    ds = AudioDataset.from_folder(synth.root / "clips", clip_s=0.5)
    assert ds.labels == sorted(synth.labels) and len(ds) == synth.num_clips and not ds.multilabel
    first = ds[0]
    assert first["audio"].shape == (8000,) and ds.labels[int(first["label"])] in first["path"]
    (tmp_path / "Avis" / ".cache").mkdir(parents=True)
    sf.write(str(tmp_path / "Avis" / "a.flac"), np.zeros(4000, np.float32), 16000)
    sf.write(str(tmp_path / "Avis" / ".cache" / "b.wav"), np.zeros(4000, np.float32), 16000)
    sf.write(str(tmp_path / "loose.wav"), np.zeros(4000, np.float32), 16000)
    with pytest.warns(UserWarning, match="1 directly in the root folder.*1 hidden"):
        ds = AudioDataset.from_folder(tmp_path)
    assert ds.labels == ["Avis"] and len(ds) == 1
    # The same audio endings as the CLI's folder search: an AIFF in a class folder is a clip, a text file is not.
    sf.write(str(tmp_path / "Avis" / "c.aiff"), np.zeros(4000, np.float32), 16000)
    (tmp_path / "Avis" / "notes.txt").write_text("not audio")
    with pytest.warns(UserWarning):
        ds = AudioDataset.from_folder(tmp_path)
    assert sorted(Path(item.path).name for item in ds.items) == ["a.flac", "c.aiff"]
    assert sorted(Path(p).name for p in find_audio_files([tmp_path / "Avis"])) == ["a.flac", "c.aiff"]


def test_annotations_manifest_reads_only_the_annotated_spans(synth):
    ds = AudioDataset.from_manifest(synth.annotations, label_map=synth.labels, clip_s=None)
    rows = list(csv.DictReader(open(synth.annotations)))
    assert len(ds) == len(rows) > 3
    full, _ = sf.read(str(synth.long_recordings[0]))
    noise = np.mean(full[: int(float(rows[0]["start_s"]) * sf.info(str(synth.long_recordings[0])).samplerate)] ** 2)
    for i, row in enumerate(rows):
        item = ds[i]
        start, end = float(row["start_s"]), float(row["end_s"])
        assert item["start_s"] == pytest.approx(start, abs=1e-4)
        assert abs(item["audio"].shape[0] - (end - start) * 16000) <= 2
        assert ds.labels[int(item["label"])] == row["label"]
        assert float(item["audio"].square().mean()) > 3 * noise  # the span holds the call, not background


def test_fixed_length_crop_pad_and_seeded_random_crops(single):
    padded = AudioDataset.from_manifest(single.manifest, clip_s=1.5)[0]
    assert padded["audio"].shape == padded["padding_mask"].shape == (24000,)
    assert not padded["padding_mask"][:16000].any() and padded["padding_mask"][16000:].all()
    assert not padded["audio"][16000:].any()
    cropped = AudioDataset.from_manifest(single.manifest, clip_s=0.25)[0]
    assert cropped["audio"].shape == (4000,) and not cropped["padding_mask"].any() and cropped["start_s"] == 0.0
    ds = AudioDataset.from_manifest(single.manifest, clip_s=0.25, random_crop=True, seed=7)
    again = AudioDataset.from_manifest(single.manifest, clip_s=0.25, random_crop=True, seed=7)
    starts = [ds[i]["start_s"] for i in range(len(ds))]
    assert starts == [again[i]["start_s"] for i in range(len(ds))]
    assert all(0.0 <= s <= 0.75 for s in starts) and len(set(starts)) > 1
    ds.set_epoch(1)
    assert [ds[i]["start_s"] for i in range(len(ds))] != starts
    item = ds[3]
    full, _ = sf.read(item["path"], dtype="float32")
    offset = round(item["start_s"] * 16000)
    assert torch.allclose(item["audio"], torch.from_numpy(full[offset: offset + 4000]), atol=1e-6)


def test_collate_pads_batches_and_stacks_labels(synth, single):
    loader = torch.utils.data.DataLoader(AudioDataset.from_manifest(synth.manifest, clip_s=0.5), batch_size=4,
                                         collate_fn=AudioDataset.collate)
    batch = next(iter(loader))
    assert batch["audio"].shape == batch["padding_mask"].shape == (4, 8000)
    assert batch["target"].shape == (4, 3) and len(batch["path"]) == 4
    spans = AudioDataset.from_manifest(synth.annotations, clip_s=None)
    batch = AudioDataset.collate([spans[0], spans[1], spans[2]])
    lengths = [spans[i]["audio"].shape[0] for i in range(3)]
    assert batch["audio"].shape == (3, max(lengths)) and batch["label"].dtype == torch.int64
    assert (~batch["padding_mask"]).sum(1).tolist() == lengths
    single_batch = AudioDataset.collate([AudioDataset.from_manifest(single.manifest)[i] for i in (0, 11)])
    assert single_batch["label"].tolist() == [0, 1] and single_batch["audio"].shape == (2, 160000)


def test_channel_selection(synth):
    both = AudioDataset.from_manifest(synth.manifest, channels="all", clip_s=1.0)
    assert len(both) == 2 * synth.num_clips and [both[i]["channel"] for i in range(2)] == [0, 1]
    left = AudioDataset.from_manifest(synth.manifest, channels=0, clip_s=1.0)[0]
    mixed = AudioDataset.from_manifest(synth.manifest, clip_s=1.0)[0]
    assert torch.allclose(left["audio"], both[0]["audio"])
    assert torch.allclose(mixed["audio"], (both[0]["audio"] + both[1]["audio"]) / 2, atol=1e-5)
    expected = rf"{synth.num_clips} of {synth.num_clips} items(.|\n)*channel 2 requested, the file has 2 channels"
    with pytest.raises(AudioDecodeError, match=expected):
        AudioDataset.from_manifest(synth.manifest, channels=2).check()


# -- errors ---------------------------------------------------------------------------------------------------------
def test_label_outside_the_label_map_names_label_line_and_known_labels(single, tmp_path):
    clip = single.root / "clips" / single.labels[0]
    first = sorted(clip.iterdir())[0]
    manifest = write_manifest(tmp_path / "m.csv", [[first, single.labels[0]], [first, "Avis ignota"]])
    with pytest.raises(ValueError, match=r"'Avis ignota' \(m.csv line 3\)(.|\n)*known labels \(2\): \['Sweepus"):
        AudioDataset.from_manifest(manifest, label_map=single.labels)


def test_missing_files_listed_together_or_skipped_and_counted(single, tmp_path):
    real = sorted((single.root / "clips" / single.labels[0]).iterdir())[0]
    manifest = write_manifest(tmp_path / "m.csv", [[real, "a"], ["gone1.wav", "a"], ["sub/gone2.wav", "b"]])
    with pytest.raises(FileNotFoundError, match=r"2 of 3 items(.|\n)*gone1.wav: file not found(.|\n)*gone2.wav"):
        AudioDataset.from_manifest(manifest)
    with pytest.warns(UserWarning, match="skipped 2 of 3 items"):
        ds = AudioDataset.from_manifest(manifest, on_error="skip")
    assert len(ds) == 1 and [p.split("/")[-1] for p, _ in ds.failures] == ["gone1.wav", "gone2.wav"]
    assert ds.labels == ["a", "b"]  # the label set still comes from the whole manifest


def test_corrupt_files_raise_by_name_and_check_removes_them(single, tmp_path):
    good = sorted((single.root / "clips" / single.labels[0]).iterdir())[:2]
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    manifest = write_manifest(tmp_path / "m.csv", [[good[0], "a"], ["bad.wav", "a"], [good[1], "b"],
                                                   ["empty.wav", "b"]])
    ds = AudioDataset.from_manifest(manifest)
    with pytest.raises(AudioDecodeError, match=r"dataset item 1 \(.*bad.wav\)"):
        ds[1]
    with pytest.raises(AudioDecodeError, match=r"2 of 4 items(.|\n)*bad.wav(.|\n)*empty.wav"):
        ds.check()
    with pytest.warns(UserWarning, match="skipped 2 of 4 items"):
        failures = ds.check(on_error="skip")
    assert [p.split("/")[-1] for p, _ in failures] == ["bad.wav", "empty.wav"] and len(ds) == 2
    assert ds.check() == [] and ds[1]["audio"].shape == (160000,)


def test_a_check_that_would_leave_nothing_raises_and_changes_nothing(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really audio")
    ds = AudioDataset([(tmp_path / "bad.wav", "a")])
    with pytest.warns(UserWarning, match="skipped 1 of 1 items"), \
            pytest.raises(ValueError, match=r"no usable audio items left in the given items: all 1 were skipped"):
        ds.check(on_error="skip")
    assert [item.path for item in ds.items] == [tmp_path / "bad.wav"] and ds.failures == []


def test_empty_and_malformed_inputs_say_where_and_what(tmp_path, single):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no audio files with extensions .* class sub-folders of .*empty"):
        AudioDataset.from_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        AudioDataset.from_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="has no rows; expected a header"):
        AudioDataset.from_manifest(write_manifest(tmp_path / "header.csv", []))
    with pytest.raises(ValueError, match=r"needs a 'path' column.*\['file', 'label'\]"):
        AudioDataset.from_manifest(write_manifest(tmp_path / "cols.csv", [["x.wav", "a"]], ("file", "label")))
    real = sorted((single.root / "clips" / single.labels[0]).iterdir())[0]
    timed = write_manifest(tmp_path / "t.csv", [[real, "a", "0.5", "0.2"]], ("path", "label", "start_s", "end_s"))
    with pytest.raises(ValueError, match="t.csv line 2: end_s=0.2 must be after start_s=0.5"):
        AudioDataset.from_manifest(timed)
    negative = write_manifest(tmp_path / "n.csv", [[real, "a", "-1", ""]], ("path", "label", "start_s", "end_s"))
    with pytest.raises(ValueError, match="n.csv line 2: start_s/end_s must be finite seconds >= 0"):
        AudioDataset.from_manifest(negative)
    with pytest.raises(ValueError, match="w.csv line 2: more fields than the header's 2 columns"):
        AudioDataset.from_manifest(write_manifest(tmp_path / "w.csv", [[real, "a", "extra"]]))
    blank = write_manifest(tmp_path / "b.csv", [[real, "a"], [real, ""]])
    with pytest.raises(ValueError, match=r"1 items do not have exactly one label(.|\n)*b.csv line 3"):
        AudioDataset.from_manifest(blank)
    assert AudioDataset.from_manifest(blank, multilabel=True).targets.tolist() == [[1.0], [0.0]]
    with pytest.raises(ValueError, match="no audio items in the given items"):
        AudioDataset([])
    with pytest.raises(ValueError, match="on_error must be"):
        AudioDataset([AudioItem(real, ("a",))], on_error="ignore")
    with pytest.raises(ValueError, match="split='train' asked for but there is no 'split' column"):
        AudioDataset.from_manifest(blank, split="train")


def test_start_past_end_of_file_is_named(single, tmp_path):
    real = sorted((single.root / "clips" / single.labels[0]).iterdir())[0]
    manifest = write_manifest(tmp_path / "m.csv", [[real, "a", "5.0", ""]], ("path", "label", "start_s", "end_s"))
    ds = AudioDataset.from_manifest(manifest)
    with pytest.raises(AudioDecodeError, match=f"dataset item 0 .*{real.name}"):
        ds[0]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="no usable audio items left"):
            ds.check(on_error="skip")


def test_end_past_end_of_file_is_named_not_padded(single, tmp_path):
    # Issue 27: an end_s past the end of the file was padded with zeros without a word.
    real = sorted((single.root / "clips" / single.labels[0]).iterdir())[0]  # 1.0 s
    header = ("path", "label", "start_s", "end_s")
    ds = AudioDataset.from_manifest(write_manifest(tmp_path / "m.csv", [[real, "a", "0.5", "3.0"]], header))
    with pytest.raises(AudioDecodeError, match=rf"dataset item 0 \(.*{real.name}\): end_s=3.0 is past the end of the "
                                               r"file \(1.000 s\)"):
        ds[0]
    with pytest.raises(AudioDecodeError, match=r"1 of 1 items(.|\n)*end_s=3.0 is past the end of the file \(1.000 s\)"):
        ds.check()
    exact = AudioDataset.from_manifest(write_manifest(tmp_path / "e.csv", [[real, "a", "0.5", "1.0"]], header),
                                       clip_s=None)
    assert exact.check() == [] and exact[0]["audio"].shape == (8000,)


def test_plain_paths_are_items(single):
    # Issue 27: AudioDataset(["/x/a.wav"]) failed on "dictionary update sequence element #0 has length 1", a Path
    # item on "'PosixPath' object is not iterable".
    files = sorted((single.root / "clips" / single.labels[0]).iterdir())[:2]
    ds = AudioDataset([str(files[0]), files[1]], clip_s=1.0)
    assert [item.path for item in ds.items] == files and ds.labels == [] and len(ds) == 2
    item = ds[1]
    assert item["path"] == str(files[1]) and item["audio"].shape == (16000,) and "label" not in item


def test_a_label_listed_twice_counts_once(single, tmp_path):
    # Issue 27: one row labelled "A;A" made the whole dataset multi-label (mAP instead of accuracy, no NMI).
    real = sorted((single.root / "clips" / single.labels[0]).iterdir())[:3]
    manifest = write_manifest(tmp_path / "m.csv", [[real[0], "A"], [real[1], "A;A"], [real[2], "B"]])
    with pytest.warns(UserWarning, match=r"1 items list a label more than once; each is counted once:\n  m.csv line 3"):
        ds = AudioDataset.from_manifest(manifest)
    assert not ds.multilabel and ds.targets.tolist() == [0, 0, 1] and ds.items[1].labels == ("A",)
    with pytest.warns(UserWarning, match=r"1 items list a label more than once"):
        direct = AudioDataset([(real[0], "A"), (real[1], ["B", "B"])])
    assert not direct.multilabel and direct.targets.tolist() == [0, 1]


def test_a_repeated_manifest_column_is_refused(single, tmp_path):
    # Issue 27: csv kept the last of two 'label' columns without a word.
    real = sorted((single.root / "clips" / single.labels[0]).iterdir())[0]
    manifest = write_manifest(tmp_path / "m.csv", [[real, "A", "B"]], ("path", "label", " label"))
    with pytest.raises(ValueError, match=r"m.csv line 1: the header names \['label'\] more than once"):
        AudioDataset.from_manifest(manifest)
