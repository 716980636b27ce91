"""ONNX export: the exported graph round-trips under onnxruntime against PyTorch on the beats-tiny fixture."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from avex_hub.cli import main
from avex_hub.integrations.onnx_export import (
    ExportGraph, OnnxExportError, dft_frame_basis, export_onnx, read_onnx_metadata, validation_audio,
)
from avex_hub.encoder.fbank import FbankConfig

from conftest import FIXTURE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    worst = export_onnx(model, path, tolerance=1e-4)
    return path, worst


def _float64_fbank(audio: torch.Tensor, model) -> torch.Tensor:
    """The Kaldi filterbank in float64 through an FFT: the truth both float32 forms approximate."""
    cfg, p = model.fbank.config, model.preprocessing
    frames = (audio.double() * p.input_scale).unfold(1, cfg.window_size, cfg.window_shift)
    frames = frames - frames.mean(-1, keepdim=True)
    frames = frames - cfg.preemphasis * torch.cat([frames[..., :1], frames[..., :-1]], -1)
    window = torch.hann_window(cfg.window_size, periodic=False, dtype=torch.float64).pow(cfg.window_exponent)
    spectrum = torch.fft.rfft(frames * window, n=cfg.n_fft)
    energies = spectrum.abs().square() @ model.fbank.mel_weights.double()
    return (energies.clamp(min=torch.finfo(torch.float32).eps).log() - p.fbank_mean) / (2 * p.fbank_std)


def test_dft_basis_is_the_kaldi_frame_transform():
    """Each basis row on a random frame equals DC removal, pre-emphasis, window and the DFT bin, in float64."""
    cfg = FbankConfig()
    frame = torch.randn(cfg.window_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = frame - frame.mean()
    x = x - cfg.preemphasis * torch.cat([x[:1], x[:-1]])
    x = x * torch.hann_window(cfg.window_size, periodic=False, dtype=torch.float64).pow(cfg.window_exponent)
    spectrum = torch.fft.rfft(x, n=cfg.n_fft)
    got = dft_frame_basis(cfg) @ frame
    bins = cfg.n_fft // 2 + 1
    assert torch.allclose(got[:bins], spectrum.real, atol=1e-9)
    assert torch.allclose(got[bins:], spectrum.imag, atol=1e-9)


def test_convolution_filterbank_is_as_close_to_float64_as_the_fft(model):
    audio = validation_audio()[0]
    truth = _float64_fbank(audio, model)
    with torch.inference_mode():
        conv = ExportGraph(model).filterbank(audio).double()
        fft = model.preprocess(audio).double()
    # Measured: conv 3.4e-5 from float64, the float32 FFT 2.3e-4 (tones over faint noise: a wide dynamic range).
    assert (conv - truth).abs().max() < 5e-5
    assert (conv - truth).abs().max() <= (fft - truth).abs().max()


def test_export_round_trips_under_onnxruntime(exported, model):
    """Other batch sizes and lengths than the traced example (dynamic axes), against the PyTorch model."""
    path, worst = exported
    assert set(worst) == {"features", "embedding", "logits"} and max(worst.values()) <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["audio"]
    rng = np.random.default_rng(3)
    for batch, samples in ((3, 16000 * 4 + 123), (1, 2800), (2, 160000)):
        audio = (0.2 * rng.standard_normal((batch, samples))).astype(np.float32)
        features, embedding, logits = session.run(["features", "embedding", "logits"], {"audio": audio})
        with torch.inference_mode():
            tensor = torch.from_numpy(audio)
            expected = model.encode(tensor).features
            expected_logits = model(tensor)
        assert features.shape == tuple(expected.shape)
        assert np.abs(features - expected.numpy()).max() <= 1e-4
        assert np.abs(embedding - expected.mean(1).numpy()).max() <= 1e-4
        assert np.abs(logits - expected_logits.numpy()).max() <= 1e-4


def test_export_metadata_carries_provenance_and_contract(exported, model):
    meta = read_onnx_metadata(exported[0])
    assert meta["format"] == "avex_hub.onnx"
    assert meta["weights_sha256"] == model.weights_sha256 and meta["weights_sha256"]
    assert meta["label_names"] == list(model.labels)
    assert meta["preprocessing"] == model.preprocessing.to_dict()
    assert meta["config"]["encoder_layers"] == model.num_layers
    assert set(meta["outputs"]) == {"features", "embedding", "logits"}


def test_encoder_without_head_exports_two_outputs(tmp_path):
    from avex_hub import AvexModel
    from avex_hub.encoder.beats import BEATsConfig

    config = BEATsConfig.from_dict({**__import__("json").loads((FIXTURE / "config.json").read_text())})
    torch.manual_seed(0)
    encoder = AvexModel(config)  # fresh weights, no label map
    path = tmp_path / "encoder.onnx"
    worst = export_onnx(encoder, path)  # fresh random weights: ~1.2e-4 on features, within the default 1e-3
    assert set(worst) == {"features", "embedding"}
    assert read_onnx_metadata(path)["label_names"] is None and math.isfinite(worst["features"])


def test_cli_export_writes_a_validated_file(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code = main(["export", "esp_aves2_sl_beats_all", "--checkpoint", str(FIXTURE), "--out", str(out)])
    assert code == 0 and out.is_file()
    assert "max|Δ|" in capsys.readouterr().out
    assert read_onnx_metadata(out)["model"] == "esp_aves2_sl_beats_all"


def test_failed_validation_writes_nothing(tmp_path, model, capsys):
    out = tmp_path / "m.onnx"
    with pytest.raises(OnnxExportError, match="tolerance"):
        export_onnx(model, out, tolerance=0.0)
    assert list(tmp_path.iterdir()) == []  # not even the temporary file
    code = main(["export", "esp_aves2_sl_beats_all", "--checkpoint", str(FIXTURE), "--out", str(out),
                 "--tolerance", "0"])
    assert code == 1 and not out.exists() and "tolerance" in capsys.readouterr().err


def test_cli_export_bad_checkpoint_is_a_usage_error(tmp_path, capsys):
    code = main(["export", "esp_aves2_sl_beats_all", "--checkpoint", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "m.onnx")])
    assert code == 2 and "error" in capsys.readouterr().err


def test_read_metadata_of_foreign_or_missing_file(tmp_path):
    import onnx
    from onnx import helper

    with pytest.raises(FileNotFoundError):
        read_onnx_metadata(tmp_path / "missing.onnx")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save_model(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="avex-hub export"):
        read_onnx_metadata(tmp_path / "plain.onnx")


def test_int8_export_keeps_the_filterbank_fp32_and_the_embedding_close(tmp_path, model, caplog):
    import onnx

    path = tmp_path / "q.onnx"
    worst = export_onnx(model, path, quantize="int8")
    assert worst["embedding_cosine"] >= 0.9999  # measured 0.99991 on the fixture
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    graph = onnx.load(str(path)).graph
    integer = [n.name for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert len(integer) == 6 * model.num_layers
    assert all(n.name.startswith("/backbone/encoder/") for n in graph.node
               if n.op_type == "DynamicQuantizeLinear")
    assert [n.op_type for n in graph.node if n.name in ("/Conv", "/MatMul")] == ["Conv", "MatMul"]  # filterbank fp32
    assert "int8" in read_onnx_metadata(path)["quantization"]
    with pytest.raises(ValueError, match="quantize"):
        export_onnx(model, tmp_path / "x.onnx", quantize="int4")
