"""The one recording pipeline: window batches (avex_hub.audio.batches) and batches through a model given as an
argument (avex_hub.encoder.pipeline), checked on real windows of real files and against the model called directly."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.audio.batches import FileEnd, WindowBatch, batch_windows, file_windows
from avex_hub.audio.quality import QualityFlags
from avex_hub.audio.windows import Window, stream_windows
from avex_hub.encoder.pipeline import BatchOutputs, Embeddings, Rows, Scores, run_batches, torch_model
from conftest import tones

FLAGS = QualityFlags(clipped=False, silent=False, too_short=False)


def window(file: int, index: int, samples: int, real: int | None = None, channel: int | None = None) -> Window:
    real = samples if real is None else real
    audio = torch.full((samples,), float(file * 100 + index))
    return Window(audio=audio, padding_mask=torch.arange(samples) >= real, path=f"f{file}", channel=channel,
                  start_s=index * 1.0, end_s=index * 1.0 + real / 16000, flags=FLAGS, index=index, file=file)


def shape(items) -> list:
    """Batches as lists of (file, index), FileEnds as ("end", file)."""
    return [("end", i.file) if isinstance(i, FileEnd) else list(zip(i.file.tolist(), i.index.tolist())) for i in items]


def test_batches_hold_windows_of_one_length_and_ends_follow_their_last_window():
    items = [window(0, 0, 800), window(0, 1, 800), window(0, 2, 800, real=300), FileEnd(0),
             window(1, 0, 500), FileEnd(1),  # a recording of one window at its own length
             FileEnd(2, error="AudioDecodeError: cannot decode"),  # nothing waiting: passed on at once
             window(3, 0, 800), window(3, 1, 800, real=10), FileEnd(3, truncated=True)]
    out = list(batch_windows(items, batch_size=2))
    assert shape(out) == [[(0, 0), (0, 1)], [(0, 2)], ("end", 0), [(1, 0)], ("end", 1), ("end", 2),
                          [(3, 0), (3, 1)], ("end", 3)]
    batch = out[0]
    assert isinstance(batch, WindowBatch) and batch.audio.shape == (2, 800) and batch.audio.dtype == torch.float32
    assert batch.audio[:, 0].tolist() == [0.0, 1.0] and batch.channel.tolist() == [-1, -1]  # -1: the mono mix
    assert out[1].padding_mask.sum().item() == 500 and out[1].end_s.tolist() == [2 + 300 / 16000]
    assert out[6].flags.shape == (2, 4) and out[7].truncated and out[5].error.startswith("AudioDecodeError")
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1"):
        list(batch_windows(items, batch_size=0))


def test_file_windows_number_the_files_and_report_a_failure_without_stopping(tmp_path):
    sf.write(tmp_path / "a.wav", tones(2.5, 16000, channels=2), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    paths = [str(tmp_path / "a.wav"), str(tmp_path / "bad.wav"), str(tmp_path / "missing.wav")]
    items = list(file_windows(paths, window_s=1.0, channels="all"))
    windows = [i for i in items if isinstance(i, Window)]
    ends = [i for i in items if isinstance(i, FileEnd)]
    assert [(w.file, w.index, w.channel) for w in windows] == [(0, k, c) for k in range(3) for c in (0, 1)]
    assert [e.file for e in ends] == [0, 1, 2] and ends[0].error is None
    assert ends[1].error.startswith("AudioDecodeError") and ends[2].error.startswith("FileNotFoundError")
    direct = list(stream_windows(paths[0], window_s=1.0, channels="all"))
    assert all(torch.equal(w.audio, d.audio) for w, d in zip(windows, direct))


def test_any_callable_is_a_model_and_its_rows_are_checked(tmp_path):
    items = [window(0, 0, 800), window(0, 1, 800), FileEnd(0), window(1, 0, 800), FileEnd(1)]

    def loudness(batch: WindowBatch) -> dict[str, np.ndarray]:  # a stand-in for a runtime session or an actor
        return {"embeddings": batch.audio.mean(dim=1, keepdim=True)[:, None].numpy()}

    rows, tables = Rows(), {}
    for item in run_batches(loudness, batch_windows(items, batch_size=2)):
        if isinstance(item, FileEnd):
            tables[item.file] = rows.take(item.file)
        else:
            assert isinstance(item, BatchOutputs)
            rows.add(item)
    assert tables[0]["embeddings"][:, 0, 0].tolist() == [0.0, 1.0] and tables[1]["embeddings"][:, 0, 0].tolist() == [100.0]
    assert tables[0]["index"].tolist() == [0, 1] and tables[1]["start_s"].tolist() == [0.0] and rows.parts == {}
    with pytest.raises(ValueError, match=r"returned \{'scores': \(1, 3\)\} for a batch of 2 windows"):
        list(run_batches(lambda batch: {"scores": np.zeros((1, 3))}, batch_windows(items, batch_size=2)))


def test_the_torch_model_gives_what_the_model_gives(tiny_model, tmp_path):
    sf.write(tmp_path / "a.wav", tones(2.5, 16000), 16000)
    batches = [b for b in batch_windows(file_windows([str(tmp_path / "a.wav")], window_s=1.0), 3)
               if isinstance(b, WindowBatch)]
    assert len(batches) == 1 and batches[0].padding_mask[2].sum() == 8000  # the last window half padding
    batch = batches[0]
    with torch.inference_mode():
        logits = tiny_model.logits(batch.audio, batch.padding_mask)
        pooled = tiny_model.pooled_layers(batch.audio, batch.padding_mask, layers=[1, 3], pooling="max")
    scores = torch_model(tiny_model, Scores())(batch)["scores"]
    np.testing.assert_allclose(scores, torch.sigmoid(logits).numpy(), atol=1e-6)
    embeddings = torch_model(tiny_model, Embeddings((1, 3), "max"))(batch)["embeddings"]
    np.testing.assert_allclose(embeddings, pooled.numpy(), atol=1e-6)
    # a batch with no padding runs without a mask: the same numbers
    full = WindowBatch(**{k: v[:2] for k, v in vars(batch).items()})
    with torch.inference_mode():
        masked = tiny_model.pooled_layers(full.audio, full.padding_mask, layers=[3])
    np.testing.assert_allclose(torch_model(tiny_model, Embeddings((3,)))(full)["embeddings"], masked.numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match=r"layer indices \[7\] out of range"):
        torch_model(tiny_model, Embeddings((7,)))
    with pytest.raises(ValueError, match=r"pooling must be 'mean' or 'max'"):
        torch_model(tiny_model, Embeddings((1,), "sum"))


def test_the_agile_adapter_and_search_queries_run_on_the_pipeline(tiny_model, tmp_path):
    """hoplite's embed and search's queries: the pipeline's windows and batches, at the device policy's batch size
    (the adapter batched 8 windows at a time of its own), giving what the model gives each window."""
    agile = pytest.importorskip("avex_hub.integrations.agile")  # needs perch-hoplite
    from avex_hub.audio.windows import windows_from_array
    from avex_hub.encoder.precision import default_batch_size

    adapter = agile.AvexEmbeddingModel.from_model(tiny_model, window_size_s=1.0, hop_size_s=0.5, layer=2)
    assert adapter.batch_size == default_batch_size(torch.device("cpu"))
    audio = tones(3.3, 16000)[:, 0]
    windows = windows_from_array(audio, 16000, window_s=1.0, hop_s=0.5)  # 6 windows, the last padded
    with torch.no_grad():
        direct = torch.cat([tiny_model.embed(w.audio[None], w.padding_mask[None], layer=2) for w in windows])
    got = adapter.embed(audio).embeddings
    assert got.shape == (len(windows), 1, tiny_model.embedding_dim) and bool(windows[-1].padding_mask.any())
    np.testing.assert_allclose(got[:, 0], direct.numpy(), atol=1e-5)

    path = tmp_path / "query.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    query = agile.embed_queries(tiny_model, [agile.Query(str(path))], adapter.settings)
    unit = direct.numpy() / np.linalg.norm(direct.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(query[0], unit.mean(0), atol=1e-5)
