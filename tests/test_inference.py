"""Windowed, batched inference over files (avex_hub.embed.inference): rows, values, failures, workers, memory."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.embed.inference import classify_files, embed_files, find_audio_files, inference_settings

from conftest import tones

REPO = Path(__file__).resolve().parents[1]




def expected_starts(total: int, window: int, hop: int) -> list[int]:
    """Window starts (samples) by the rule: windows every hop until one reaches the end of the audio."""
    starts, k = [], 0
    while k * hop < total and (k == 0 or (k - 1) * hop + window < total):
        starts.append(k * hop)
        k += 1
    return starts


def window_batch(wave: np.ndarray, starts: list[int], window: int):
    audio = torch.zeros(len(starts), window)
    mask = torch.ones(len(starts), window, dtype=torch.bool)
    for i, s in enumerate(starts):
        real = torch.from_numpy(wave[s: s + window])
        audio[i, : real.numel()] = real
        mask[i, : real.numel()] = False
    return audio, mask


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    mono = tones(23, 16000, seed=1)
    sf.write(root / "mono16k.wav", mono, 16000, subtype="FLOAT")
    sf.write(root / "stereo44k.flac", tones(12, 44100, channels=2, seed=2), 44100)
    (root / "corrupt.wav").write_bytes(np.random.default_rng(3).bytes(2048))
    (root / "empty.flac").write_bytes(b"")
    return {"root": root, "mono": root / "mono16k.wav", "mono_wave": mono[:, 0], "stereo": root / "stereo44k.flac"}


@pytest.mark.parametrize("hop_s", [None, 4.0])
def test_windows_cover_the_file_and_equal_model_embed(tiny_model, files, hop_s):
    result = embed_files(tiny_model, files["mono"], window_s=10, hop_s=hop_s, num_workers=0, progress=False)
    window, hop = 160000, 16000 * int(hop_s or 10)
    total = files["mono_wave"].size
    starts = expected_starts(total, window, hop)
    assert len(result) == len(starts) == (3 if hop_s is None else 5)
    np.testing.assert_allclose(result.start_s, np.array(starts) / 16000)
    np.testing.assert_allclose(result.end_s, np.minimum(np.array(starts) + window, total) / 16000)
    assert set(result.file) == {str(files["mono"])} and (result.channel == -1).all() and not result.failures
    audio, mask = window_batch(files["mono_wave"], starts, window)
    with torch.inference_mode():
        expected = tiny_model.embed(audio, mask).numpy()
    np.testing.assert_allclose(result.embeddings, expected, atol=1e-4)


def test_all_channels_several_layers_max_pooling(tiny_model, files):
    from avex_hub.audio.windows import windows_from_array

    result = embed_files(tiny_model, [files["stereo"]], window_s=5, channels="all", layers=[0, -1], pooling="max",
                         num_workers=0, progress=False)
    # 12 s -> windows at 0, 5, 10 s; two channels each (time-major); two layers each (window-major)
    assert len(result) == 3 * 2 * 2
    np.testing.assert_array_equal(result.channel, [0, 0, 1, 1] * 3)
    np.testing.assert_array_equal(result.layer, [0, 3] * 6)
    np.testing.assert_allclose(result.start_s, np.repeat([0.0, 5.0, 10.0], 4))
    data, sr = sf.read(files["stereo"], dtype="float32", always_2d=True)
    windows = windows_from_array(data.T, sr, window_s=5, channels="all")
    audio = torch.stack([w.audio for w in windows])
    mask = torch.stack([w.padding_mask for w in windows])
    with torch.inference_mode():
        hidden = tiny_model.hidden_states(audio, mask, layers=[0, 3])
        frame_mask = tiny_model.encode(audio, mask).padding_mask
        pooled = torch.stack([tiny_model.pool(h, frame_mask, "max") for h in hidden], dim=1)  # [windows, 2, C]
    np.testing.assert_allclose(result.embeddings, pooled.reshape(-1, pooled.shape[-1]).numpy(), atol=1e-4)


def test_layers_takes_an_index_a_list_or_all_and_layer_is_gone(tiny_model, files):
    """0.1.0 is the first release: embed_files' keyword is layers= only (layer=, its name before lists, is gone)."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'layer'"):
        embed_files(tiny_model, files["mono"], layer=[1, -1], progress=False)
    assert inference_settings(tiny_model, "embed", layers="all").layers == (0, 1, 2, 3)
    assert inference_settings(tiny_model, "embed", layers=(2, 0)).layers == (2, 0)
    assert inference_settings(tiny_model, "embed", layers=-1).layers == (3,)


def test_classify_scores_are_sorted_sigmoid_of_logits(tiny_model, files):
    result = classify_files(tiny_model, files["mono"], top_k=3, num_workers=0, progress=False)
    starts = expected_starts(files["mono_wave"].size, 160000, 160000)
    audio, mask = window_batch(files["mono_wave"], starts, 160000)
    with torch.inference_mode():
        scores = torch.sigmoid(tiny_model.logits(audio, mask))
    values, indices = scores.topk(3, dim=1)
    np.testing.assert_allclose(result.top_scores, values.numpy(), atol=1e-5)
    np.testing.assert_array_equal(result.top_indices, indices.numpy())
    assert (np.diff(result.top_scores, axis=1) <= 0).all()
    assert result.top_labels[0] == [tiny_model.labels[i] for i in indices[0].tolist()]


def test_asked_species_keep_their_score_in_every_window(tiny_model, files):
    """classify --species: each asked label's sigmoid score in every window, in the order asked, also where it is
    not among the window's top k; a misspelt name is refused with the closest label."""
    asked = ["Megaptera novaeangliae", "turdus  MERULA"]  # case and spacing are forgiven
    result = classify_files(tiny_model, files["mono"], species=asked, num_workers=0, progress=False)
    starts = expected_starts(files["mono_wave"].size, 160000, 160000)
    audio, mask = window_batch(files["mono_wave"], starts, 160000)
    with torch.inference_mode():
        scores = torch.sigmoid(tiny_model.logits(audio, mask)).numpy()
    columns = [tiny_model.labels.index("Megaptera novaeangliae"), tiny_model.labels.index("Turdus merula")]
    assert result.settings.species == ("Megaptera novaeangliae", "Turdus merula")
    np.testing.assert_allclose(result.top_scores, scores[:, columns], atol=1e-5)
    assert result.top_labels == [["Megaptera novaeangliae", "Turdus merula"]] * len(starts)
    with pytest.raises(ValueError, match=r"'Turdus merla' \(did you mean 'Turdus merula'\?\)"):
        inference_settings(tiny_model, "classify", species=["Turdus merla"])
    assert "species" not in inference_settings(tiny_model, "classify").to_dict()  # top-k shards keep their names


def test_unreadable_files_are_reported_and_the_rest_processed(tiny_model, files):
    result = embed_files(tiny_model, files["root"], num_workers=0, progress=False)
    root = files["root"]
    assert sorted(result.failures) == sorted([str(root / "corrupt.wav"), str(root / "empty.flac")])
    assert "empty" in result.failures[str(root / "empty.flac")]
    assert sorted(set(result.file)) == sorted([str(files["mono"]), str(files["stereo"])])
    assert list(dict.fromkeys(result.file)) == [str(files["mono"]), str(files["stereo"])]  # input (sorted) order


def test_worker_processes_give_the_same_rows(tiny_model, files):
    serial = embed_files(tiny_model, files["root"], num_workers=0, batch_size=3, progress=False)
    parallel = embed_files(tiny_model, files["root"], num_workers=2, batch_size=2, progress=False)
    np.testing.assert_array_equal(serial.file, parallel.file)
    np.testing.assert_array_equal(serial.start_s, parallel.start_s)
    np.testing.assert_allclose(serial.embeddings, parallel.embeddings, atol=1e-5)
    assert serial.failures.keys() == parallel.failures.keys()


def test_int8_agrees_with_fp32(tiny_model, files):
    kwargs = dict(window_s=5, num_workers=0, progress=False)
    fp32 = embed_files(tiny_model, files["root"], **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's quantisation deprecation notices are ours to handle, not the user's
        int8 = embed_files(tiny_model, files["root"], precision="int8", **kwargs)
    a, b = torch.from_numpy(fp32.embeddings), torch.from_numpy(int8.embeddings)
    assert torch.nn.functional.cosine_similarity(a, b).min() >= 0.99
    assert not torch.equal(a, b)  # it really ran quantised
    top_fp32 = classify_files(tiny_model, files["root"], top_k=1, **kwargs).top_indices
    top_int8 = classify_files(tiny_model, files["root"], top_k=1, precision="int8", **kwargs).top_indices
    assert (top_fp32 == top_int8).mean() >= 0.9


def test_bad_arguments_fail_before_any_work(tiny_model, files):
    from avex_hub import AvexModel

    with pytest.raises(ValueError, match="hop_s"):
        embed_files(tiny_model, files["mono"], window_s=5, hop_s=6, progress=False)
    with pytest.raises(ValueError, match="shorter than the model's minimum"):
        embed_files(tiny_model, files["mono"], window_s=0.1, progress=False)
    with pytest.raises(ValueError, match="pooling"):
        embed_files(tiny_model, files["mono"], pooling="median", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        embed_files(tiny_model, files["mono"], layers=9, progress=False)
    with pytest.raises(ValueError, match="no species head"):
        inference_settings(AvexModel(tiny_model.config), "classify")
    with pytest.raises(FileNotFoundError, match="input not found"):
        embed_files(tiny_model, files["root"] / "missing.wav", progress=False)


def test_find_audio_files(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("a.WAV", "b/c.flac", "notes.txt", ".hidden.wav", "b/d.mp3"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "x.txt").write_bytes(b"x")
    found = find_audio_files([tmp_path, tmp_path / "x.txt", tmp_path / "a.WAV"])
    assert found == [str(tmp_path / "a.WAV"), str(tmp_path / "b" / "c.flac"), str(tmp_path / "b" / "d.mp3"),
                     str(tmp_path / "x.txt")]


MEMORY_SCRIPT = r"""
import json, resource, sys, tracemalloc
from avex_hub import AvexModel
from avex_hub.encoder.beats import BEATsConfig
from avex_hub.embed.inference import embed_files
# A one-layer 16-dim BEATs with fresh weights: memory per batch does not depend on the file, so the
# cheapest valid model keeps this test about decoding and windowing (and fast on a loaded CI box).
model = AvexModel(BEATsConfig(embed_dim=16, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                              encoder_attention_heads=2, encoder_layers=1, conv_pos=16, conv_pos_groups=4))
rss, traced, rows = [], [], []
tracemalloc.start()
for path in sys.argv[1:]:
    tracemalloc.reset_peak()
    result = embed_files(model, path, window_s=10, num_workers=0, progress=False)
    rows.append(len(result))
    traced.append(tracemalloc.get_traced_memory()[1] / 2**20)  # numpy and Python objects, MiB
    rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # whole process, MiB (KiB on Linux)
print(json.dumps({"rss": rss, "traced": traced, "rows": rows}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units differ off Linux")
def test_peak_memory_does_not_grow_with_file_length(tmp_path):
    minutes = (6, 24)
    blocks = [tones(60, 8000, seed=i) for i in range(3)]
    for m in minutes:
        with sf.SoundFile(tmp_path / f"{m}min.wav", "w", 8000, 1) as f:  # 8 kHz mono, written a minute at a time
            for i in range(m):
                f.write(blocks[i % 3])
    paths = [str(tmp_path / f"{m}min.wav") for m in minutes]
    # A fixed 1 MiB mmap threshold returns freed batch buffers to the OS; glibc's adaptive threshold
    # otherwise keeps them on its heap and makes peak RSS wander by tens of MiB from run to run.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, *paths],
                         capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rows"] == [math.ceil(60 * m / 10) for m in minutes]  # every second covered, nothing more
    # The 24-minute file whole at 16 kHz float32 is 88 MiB (loading a 20-minute file whole through
    # load_audio raised the peak by ~350 MiB here); streamed, the peak stays where the 6-minute file (several
    # 60 s blocks: steady state) put it, up to allocator noise of ~12 MiB.
    traced_growth = report["traced"][1] - report["traced"][0]
    rss_growth = report["rss"][1] - report["rss"][0]
    assert traced_growth < 2, f"array memory grew by {traced_growth:.1f} MiB from a 6- to a 24-minute file"
    assert rss_growth < 30, f"peak RSS grew by {rss_growth:.1f} MiB from a 6- to a 24-minute file"


def test_atomic_writes_keep_the_umask_permissions(tmp_path):
    import os

    import torch
    from safetensors.torch import save_file

    from avex_hub.embed.outputs import atomic_path

    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "w.safetensors") as tmp:
            save_file({"a": torch.zeros(1)}, str(tmp))  # safetensors itself writes owner-only files
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "w.safetensors").st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
