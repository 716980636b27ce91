"""Recordings of any length through ``model.predict`` / ``model.embed``: windowed, batched, bounded in memory.

Values are checked against the model run by hand on the same windows, against ``inference.classify_files``
/ ``embed_files`` and against answers recorded from the unwindowed code (commit 51923e4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.encoder.model import LONG_INPUT_S, LongInputWarning
from avex_hub.encoder.recordings import Prediction, WindowEmbeddings, WindowPrediction

from conftest import tones

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def by_hand(model, wave: np.ndarray):
    """Window a 16 kHz mono array the documented way (10 s windows, the last zero padded and masked) and
    score every window in one batch: (sigmoid scores [windows, labels], starts, ends) in seconds."""
    window = round(model.preprocessing.window_s * model.sample_rate)
    starts = list(range(0, len(wave), window))
    audio = torch.zeros(len(starts), window)
    mask = torch.ones(len(starts), window, dtype=torch.bool)
    for i, s in enumerate(starts):
        real = torch.from_numpy(wave[s: s + window])
        audio[i, : real.numel()], mask[i, : real.numel()] = real, False
    with torch.inference_mode():
        scores = torch.sigmoid(model.logits(audio, mask))
        embeddings = model.embed(audio, mask)
    ends = [min(s + window, len(wave)) / 16000 for s in starts]
    return scores, embeddings, [s / 16000 for s in starts], ends


@pytest.fixture(scope="module")
def long_wave() -> np.ndarray:
    return tones(25.0, 16000, seed=7)[:, 0]  # windows 0-10, 10-20, 20-25 (padded)


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "stereo22k.wav"
    sf.write(path, tones(23.5, 22050, channels=2, seed=5), 22050, subtype="FLOAT")
    return path


def test_short_input_gives_the_previous_answer(tiny_model, tmp_path):
    """Recorded from the code before windowing; a recording of at most one window is still scored whole."""
    x = tones(4.0, 22050, channels=2, seed=3)
    sf.write(tmp_path / "short.wav", x, 22050, subtype="FLOAT")
    before = [("Hyla arborea", 6, 0.571280300617218), ("Erithacus rubecula", 2, 0.5189170241355896),
              ("Pipistrellus pipistrellus", 5, 0.5096712708473206), ("Parus major", 3, 0.47020286321640015)]
    for answer in (tiny_model.predict(tmp_path / "short.wav", top_k=4), tiny_model.predict(x.T, 22050, top_k=4)):
        assert [(p.label, p.index) for p in answer] == [(label, index) for label, index, _ in before]
        assert np.allclose([p.score for p in answer], [s for _, _, s in before], atol=1e-6)
        assert all((p.start_s, p.end_s) == (0.0, 4.0) for p in answer)
    per_channel = tiny_model.predict(x.T, 22050, top_k=2, channels="all")
    assert [[(p.index, round(p.score, 6)) for p in row] for row in per_channel] == [
        [(5, round(0.583533763885498, 6)), (6, round(0.5442806482315063, 6))],
        [(2, round(0.5801146626472473, 6)), (6, round(0.5211354494094849, 6))]]
    exactly_one_window = tones(10.0, 16000, seed=4)[:, 0]
    answer = tiny_model.predict(exactly_one_window, 16000, top_k=3)
    assert [p.index for p in answer] == [2, 3, 6]
    assert np.allclose([p.score for p in answer], [0.651982843875885, 0.5586159825325012, 0.5041525959968567],
                       atol=1e-6)
    with torch.inference_mode():  # and it is the tensor path's answer
        direct = torch.sigmoid(tiny_model.logits(torch.from_numpy(exactly_one_window)[None]))[0]
    assert np.allclose([p.score for p in answer], direct[[2, 3, 6]].tolist(), atol=1e-6)


def test_long_input_is_the_max_over_windows(tiny_model, long_wave, tmp_path):
    scores, _, starts, ends = by_hand(tiny_model, long_wave)
    assert len(starts) == 3 and ends[-1] == 25.0
    best, where = scores.max(dim=0)  # per label
    n = len(tiny_model.labels)
    sf.write(tmp_path / "long.wav", long_wave, 16000, subtype="FLOAT")
    for answer in (tiny_model.predict(long_wave, 16000, top_k=n), tiny_model.predict(tmp_path / "long.wav", top_k=n)):
        assert len(answer) == n and all(isinstance(p, Prediction) for p in answer)
        assert [p.score for p in answer] == sorted((p.score for p in answer), reverse=True)
        for p in answer:
            assert p.label == tiny_model.label_map.name(p.index)
            assert abs(p.score - float(best[p.index])) <= 1e-5
            k = int(where[p.index])
            assert (p.start_s, p.end_s) == (starts[k], ends[k])
    # the scores differ between windows, so the max is a real choice (not one window's answer)
    assert len({int(where[i]) for i in range(n)}) > 1


def test_per_window_rows_equal_classify_files(tiny_model, long_file):
    from avex_hub.embed.inference import classify_files

    for channels in ("mix", "all", 1):
        result = classify_files(tiny_model, [long_file], top_k=3, channels=channels, progress=False)
        rows = tiny_model.predict(long_file, top_k=3, channels=channels, per_window=True)
        rows = rows if channels == "all" else [rows]
        channel_of = sorted(set(result.channel.tolist()))
        assert len(rows) == len(channel_of)
        for answer, channel in zip(rows, channel_of):
            mine = result.channel == channel
            assert all(isinstance(r, WindowPrediction) for r in answer)
            assert len(answer) == 3 * int(mine.sum()) == 3 * 3  # 23.5 s: 3 windows, top 3 each
            assert [r.start_s for r in answer] == np.repeat(result.start_s[mine], 3).tolist()
            assert [r.end_s for r in answer] == np.repeat(result.end_s[mine], 3).tolist()
            assert [r.index for r in answer] == result.top_indices[mine].ravel().tolist()
            assert [r.label for r in answer] == [tiny_model.labels[i] for i in result.top_indices[mine].ravel()]
            assert np.array_equal(np.float32([r.score for r in answer]), result.top_scores[mine].ravel())
    # the clip answer is the max of the per-window rows it came from
    clip = tiny_model.predict(long_file, top_k=1)[0]
    rows = tiny_model.predict(long_file, top_k=len(tiny_model.labels), per_window=True)
    best = max((r for r in rows if r.index == clip.index), key=lambda r: r.score)
    assert (clip.score, clip.start_s, clip.end_s) == (best.score, best.start_s, best.end_s)


def test_embed_recording_pools_window_embeddings(tiny_model, long_wave, long_file):
    from avex_hub.embed.inference import embed_files

    _, embeddings, starts, ends = by_hand(tiny_model, long_wave)
    windows = tiny_model.embed(long_wave, sample_rate=16000, per_window=True)
    assert isinstance(windows, WindowEmbeddings)
    assert torch.allclose(windows.embeddings, embeddings, atol=1e-5)
    assert windows.start_s.tolist() == starts and windows.end_s.tolist() == ends
    clip = tiny_model.embed(long_wave, sample_rate=16000)
    assert clip.shape == (tiny_model.embedding_dim,)
    assert torch.allclose(clip, embeddings.mean(0), atol=1e-5)  # the documented default: mean of windows
    assert torch.allclose(tiny_model.embed(long_wave, sample_rate=16000, clip_pooling="max"), embeddings.amax(0),
                          atol=1e-5)
    # a file gives the rows embed_files gives, per channel
    result = embed_files(tiny_model, [long_file], channels="all", progress=False)
    both = tiny_model.embed(long_file, channels="all", per_window=True)
    assert len(both) == 2
    for channel, answer in enumerate(both):
        mine = result.channel == channel
        assert np.array_equal(answer.embeddings.numpy(), result.embeddings[mine])
        assert answer.start_s.tolist() == result.start_s[mine].tolist()
    clips = tiny_model.embed(long_file, channels="all")
    assert clips.shape == (2, tiny_model.embedding_dim)
    assert torch.allclose(clips[1], torch.from_numpy(result.embeddings[result.channel == 1]).mean(0), atol=1e-6)
    # a short recording is one unpadded window: the tensor path's embedding
    short = long_wave[:16000 * 3]
    with torch.inference_mode():
        direct = tiny_model.embed(torch.from_numpy(short)[None], layer=2, pooling="max")[0]
    assert torch.allclose(tiny_model.embed(short, sample_rate=16000, layer=2, pooling="max"), direct, atol=1e-6)


def test_embed_tensor_api_is_unchanged_and_recording_arguments_are_checked(tiny_model, long_wave):
    audio = torch.from_numpy(long_wave[:32000]).reshape(2, 16000)
    with torch.inference_mode():
        assert tiny_model.embed(audio).shape == (2, tiny_model.embedding_dim)
    with pytest.raises(ValueError, match="sample_rate"):
        tiny_model.embed(long_wave)  # an array without its rate
    with pytest.raises(ValueError, match="per_window and channels apply to a recording"):
        tiny_model.embed(audio, per_window=True)
    with pytest.raises(ValueError, match="padding_mask applies to a batch"):
        tiny_model.embed(long_wave, torch.zeros(len(long_wave), dtype=torch.bool), sample_rate=16000)
    with pytest.raises(ValueError, match="clip_pooling"):
        tiny_model.embed(long_wave, sample_rate=16000, clip_pooling="median")


def test_batch_size_changes_memory_not_answers(tiny_model, long_wave):
    reference = tiny_model.predict(long_wave, 16000, top_k=3, per_window=True)  # 3 windows in one batch
    for batch_size in (1, 2):
        rows = tiny_model.predict(long_wave, 16000, top_k=3, per_window=True, batch_size=batch_size)
        assert [(r.start_s, r.index) for r in rows] == [(r.start_s, r.index) for r in reference]
        assert np.allclose([r.score for r in rows], [r.score for r in reference], atol=1e-6)
        emb = tiny_model.embed(long_wave, sample_rate=16000, batch_size=batch_size)
        assert torch.allclose(emb, tiny_model.embed(long_wave, sample_rate=16000), atol=1e-6)
    for bad in (0, 1.0, True):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            tiny_model.predict(long_wave, 16000, batch_size=bad)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3", None])
def test_predict_checks_top_k(tiny_model, long_wave, top_k):
    with pytest.raises(ValueError, match="top_k must be an int >= 1"):
        tiny_model.predict(long_wave, 16000, top_k=top_k)


def test_long_tensor_warns_once_and_short_input_not(tiny_model, long_wave):
    long = torch.zeros(1, round((LONG_INPUT_S + 1) * tiny_model.sample_rate))
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        tiny_model.hidden_states(long, layers=0)  # no transformer layer: cheap, and still one encoder call
        tiny_model.hidden_states(long[:, : 16000 * 10], layers=0)
        tiny_model.predict(np.tile(long_wave, 3), 16000)  # 75 s, windowed: no warning
        tiny_model.embed(np.tile(long_wave, 3), sample_rate=16000)
    long_warnings = [w for w in caught if issubclass(w.category, LongInputWarning)]
    assert len(long_warnings) == 1, [str(w.message) for w in caught]
    message = str(long_warnings[0].message)
    assert "61 s" in message and "model.predict(" in message and "model.embed(" in message
    assert long_warnings[0].filename == __file__  # points at the caller's line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a CPU-only torch")
def test_cuda_on_a_cpu_only_torch_is_a_clear_error(tiny_dir, tiny_model):
    from avex_hub import esp_aves2_sl_beats_all, linear_probe, load_probe

    for call in (lambda: tiny_model.to("cuda"), lambda: tiny_model.to(device="cuda:0"), lambda: tiny_model.cuda(),
                 lambda: esp_aves2_sl_beats_all(checkpoint=tiny_dir, device="cuda")):
        with pytest.raises(ValueError, match="torch sees no CUDA device; use device='cpu'"):
            call()
    with pytest.raises(ValueError, match="no CUDA device"):
        load_probe("never-read.safetensors", linear_probe(tiny_model, 3), device="cuda")
    assert tiny_model.to(torch.float32) is tiny_model and tiny_model.to("cpu").device.type == "cpu"


MEMORY_SCRIPT = r"""
import json, resource, sys, tracemalloc
import numpy as np, soundfile as sf, torch
from avex_hub import AvexModel
from avex_hub.encoder.beats import BEATsConfig
from avex_hub.labels import LabelMap
torch.set_num_threads(1)
# A one-layer 16-dim BEATs with a head: memory per batch does not depend on the recording, so the
# cheapest valid model keeps this test about decoding, windowing and reducing (and fast on a loaded box).
model = AvexModel(BEATsConfig(embed_dim=16, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                              encoder_attention_heads=2, encoder_layers=1, conv_pos=16, conv_pos_groups=4),
                  label_map=LabelMap.from_names(["a", "b", "c"]))
kind, report = sys.argv[1], {"rss": [], "traced": []}
tracemalloc.start()
for path in sys.argv[2:]:
    audio = path if kind == "file" else sf.read(path, dtype="float32")[0]  # the array exists before we measure
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    model.predict(audio, None if kind == "file" else 8000)
    model.embed(audio, sample_rate=None if kind == "file" else 8000)
    report["traced"].append((tracemalloc.get_traced_memory()[1] - held) / 2**20)  # numpy and Python objects, MiB
    report["rss"].append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB (KiB on Linux)
    del audio
print(json.dumps(report))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units differ off Linux")
@pytest.mark.parametrize("kind", ["file", "array"])
def test_memory_does_not_grow_with_recording_length(tmp_path, kind):
    minutes = (6, 12)  # from 6 minutes on (several 60 s blocks) windowing is in its steady state
    block = tones(60, 8000, seed=2)
    for m in minutes:
        with sf.SoundFile(tmp_path / f"{m}min.wav", "w", 8000, 1, "FLOAT") as f:  # 8 kHz: resampled as a stream
            for _ in range(m):
                f.write(block)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}  # freed batches go back to the OS (see test_inference)
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, kind, *[str(tmp_path / f"{m}min.wav") for m in minutes]],
                         capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # At 16 kHz float32 the extra 6 minutes are 22 MiB: decoding, resampling or copying the input whole (or
    # keeping every window) would add at least that; windowed, one 60 s block and one batch are held at a time
    # (measured: traced peaks equal to 0.01 MiB, RSS +6 MiB of allocator noise).
    traced_growth = report["traced"][1] - report["traced"][0]
    assert traced_growth < 2, f"{kind}: traced memory grew by {traced_growth:.1f} MiB from a 6- to a 12-minute input"
    if kind == "file":  # for an array the array itself (11 MiB more at 8 kHz) is in the second peak
        rss_growth = report["rss"][1] - report["rss"][0]
        assert rss_growth < 20, f"peak RSS grew by {rss_growth:.1f} MiB from a 6- to a 12-minute file"


def test_array_windows_equal_file_windows(tmp_path):
    from avex_hub.audio.windows import iter_array_windows, stream_windows

    data = tones(7.3, 44100, channels=2, seed=9)
    sf.write(tmp_path / "x.wav", data, 44100, subtype="FLOAT")
    for channels in ("mix", "all"):
        streamed = list(stream_windows(tmp_path / "x.wav", window_s=2.0, hop_s=1.5, channels=channels, block_s=1.1))
        arrayed = list(iter_array_windows(data.T, 44100, window_s=2.0, hop_s=1.5, channels=channels, block_s=1.1))
        assert len(streamed) == len(arrayed) > 4
        for a, b in zip(streamed, arrayed):
            assert (a.start_s, a.end_s, a.channel, a.index) == (b.start_s, b.end_s, b.channel, b.index)
            assert torch.equal(a.audio, b.audio) and torch.equal(a.padding_mask, b.padding_mask)
    with pytest.raises(ValueError, match=r"expected audio \[samples\]"):
        iter_array_windows(np.zeros((1, 2, 3), np.float32), 16000)


def test_long_recording_quality_is_judged_over_its_windows(tiny_model, long_wave):
    from avex_hub.audio.quality import AudioQualityWarning

    clipped = long_wave.copy()
    clipped[16000 * 12: 16000 * 13] = 1.0  # one second of the second window at full scale
    quiet = np.zeros_like(long_wave)
    quiet[16000 * 21] = 0.5  # a click: the last window is not silent, the recording is not
    for audio, expected in ((clipped, "clipped"), (np.zeros_like(long_wave), "silent"), (quiet, None)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny_model.predict(audio, 16000)
        messages = [str(w.message) for w in caught if issubclass(w.category, AudioQualityWarning)]
        assert messages == ([] if expected is None else [f"the audio array is {expected}; its scores are not reliable"])
        assert all(w.filename == __file__ for w in caught if issubclass(w.category, AudioQualityWarning))
