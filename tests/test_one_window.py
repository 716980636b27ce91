"""One rule for recordings of at most one window, on every path: run at their own length, not padded to the window
(the official library runs a clip at its own length, and so does ``model(clip)``). Before the rule ``predict`` ran
them unpadded while ``classify``/``embed`` and Lightning padded them to 10 s with a mask, and the numbers differed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.audio.arrays import MIN_SAMPLES
from avex_hub.audio.windows import stream_windows, windows_from_array
from avex_hub.cli import main, shard_name
from avex_hub.embed import outputs
from avex_hub.embed.inference import classify_files, embed_files
from conftest import FIXTURE, tones

QUIET = ["--checkpoint", str(FIXTURE), "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A 1 s clip at 16 kHz, a 3 s stereo clip at 48 kHz, a 0.1 s clip (shorter than the model's minimum) and a
    25 s recording."""
    root = tmp_path_factory.mktemp("one_window")
    sf.write(root / "a_one_second.wav", tones(1.0, 16000, seed=1), 16000, subtype="FLOAT")
    sf.write(root / "b_stereo.wav", tones(3.0, 48000, channels=2, seed=2), 48000, subtype="FLOAT")
    sf.write(root / "c_tiny.wav", tones(0.1, 16000, seed=3), 16000, subtype="FLOAT")
    sf.write(root / "d_long.wav", tones(25.0, 16000, seed=4), 16000, subtype="FLOAT")
    return root


def test_a_recording_of_at_most_one_window_is_one_window_of_its_own_length(clips):
    one = list(stream_windows(clips / "a_one_second.wav"))
    assert len(one) == 1 and one[0].audio.shape == (16000,) and not one[0].padding_mask.any()
    stereo = list(stream_windows(clips / "b_stereo.wav", channels="all"))
    assert [w.audio.shape[0] for w in stereo] == [3 * 16000] * 2 and not any(w.padding_mask.any() for w in stereo)
    tiny = list(stream_windows(clips / "c_tiny.wav"))  # below the model's shortest input: padded to it, masked
    assert tiny[0].audio.shape == (MIN_SAMPLES,) and int((~tiny[0].padding_mask).sum()) == 1600
    assert tiny[0].flags.too_short
    long = list(stream_windows(clips / "d_long.wav"))  # longer recordings: full windows, the last padded
    assert [w.audio.shape[0] for w in long] == [160000] * 3 and int(long[-1].padding_mask.sum()) == 5 * 16000
    array = windows_from_array(tones(1.0, 16000, seed=1)[:, 0], 16000)
    assert torch.equal(array[0].audio, one[0].audio)


def test_every_path_gives_a_short_clip_the_numbers_of_the_clip_itself(tiny_model, clips):
    path = clips / "a_one_second.wav"
    clip = torch.from_numpy(sf.read(path, dtype="float32")[0])[None]
    with torch.inference_mode():
        scores = torch.sigmoid(tiny_model.logits(clip))[0]
        vector = tiny_model.embed(clip)[0]
    classified = classify_files(tiny_model, [path], top_k=3, progress=False)
    np.testing.assert_allclose(classified.top_scores[0], scores.topk(3).values.numpy(), atol=1e-6)
    rows = tiny_model.predict(str(path), top_k=3, per_window=True)  # README: the values classify gives
    np.testing.assert_allclose([r.score for r in rows], classified.top_scores[0], atol=1e-6)
    embedded = embed_files(tiny_model, [path], progress=False)
    np.testing.assert_allclose(embedded.embeddings[0], vector.numpy(), atol=1e-5)
    np.testing.assert_allclose(tiny_model.embed(str(path)).numpy(), vector.numpy(), atol=1e-5)
    # the CLI: a stereo clip per channel, and a clip shorter than the minimum kept and flagged
    out = clips.parent / "one_window_out.npz"
    assert main(["embed", str(clips), "--out", str(out), "--channels", "all", *QUIET]) == 0
    with np.load(out) as data:
        rows = {(Path(f).name, int(c)): (e, flags) for f, c, e, flags in
                zip(data["file"], data["channel"], data["embeddings"], data["flags"])}
    stereo = torch.from_numpy(sf.read(clips / "b_stereo.wav", dtype="float32")[0].T.copy())
    for channel in (0, 1):
        np.testing.assert_allclose(rows["b_stereo.wav", channel][0], tiny_model.embed(
            stereo[channel].numpy(), sample_rate=48000).numpy(), atol=1e-5)
    assert rows["c_tiny.wav", 0][1].tolist() == [False, False, True, False]  # too_short
    with pytest.raises(ValueError, match=r"1600 samples at 16 kHz \(0.100 s\): shorter than the 2800 samples"):
        tiny_model.predict(str(clips / "c_tiny.wav"))  # the model's API refuses what it cannot hear


def test_shards_of_output_version_2_resume_or_are_recomputed_with_a_line(clips, tmp_path, monkeypatch, capsys):
    """A .parts/ folder written before the one-window rule: the long recording's shard (its values did not change)
    is kept, the 1 s clip's (padded then) is recomputed with a line saying why."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a_one_second.wav", "d_long.wav"):
        (folder / name).write_bytes((clips / name).read_bytes())
    out = tmp_path / "emb.parquet"
    args = ["embed", str(folder), "--out", str(out), *QUIET]
    assert main(args) == 0
    fresh = out.read_bytes()
    parts = Path(f"{out}.parts")
    for shard in sorted(parts.iterdir()):  # make them what version 2 wrote: its settings, its shard names
        arrays, meta = outputs.read_shard(shard)
        old = {**meta["settings"], "output_version": 2}
        del old["runtime"]  # version 2 ran torch only and did not name it
        outputs.write_shard(parts / shard_name(meta["path"], old), arrays, {**meta, "settings": old})
        shard.unlink()
    recomputed = []
    import avex_hub.embed.inference as inference

    real = inference.iter_file_results
    monkeypatch.setattr(inference, "iter_file_results",
                        lambda model, paths, *a, **k: (recomputed.extend(paths), real(model, paths, *a, **k))[1])
    capsys.readouterr()
    assert main(args) == 0
    assert recomputed == [str(folder / "a_one_second.wav")]
    err = capsys.readouterr().err
    assert "recomputing" in err and "a_one_second.wav" in err and "written by output version 2, which padded a " \
        "recording of at most one window to the full window; version 3 runs it at its own length" in err
    assert out.read_bytes() == fresh  # the same output as a fresh run
    for shard in parts.iterdir():
        assert json.loads(str(np.load(shard)["meta"]))["settings"]["output_version"] == 3
