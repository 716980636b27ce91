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


# -- failures: one line, the documented exit code, checked before the work where they can be ---------------------
ARGS = ["export", "esp_aves2_sl_beats_all", "--checkpoint", str(FIXTURE)]


@pytest.fixture
def builds(monkeypatch):
    """Counts model builds by the export command (the work a refusal must come before)."""
    from avex_hub.hub import loading

    calls, real = [], loading.build_model
    monkeypatch.setattr(loading, "build_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("avex-hub: error: ") and "Traceback" not in captured.err, lines
    return lines[0]


def test_out_that_is_a_folder_or_below_a_file_is_a_usage_error_before_any_work(tmp_path, builds, capsys):
    (tmp_path / "a-file").write_text("mine")
    assert main([*ARGS, "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name such as" in _one_line(capsys)
    assert main([*ARGS, "--out", str(tmp_path / "a-file" / "m.onnx")]) == 2
    assert "a-file is a file, not a folder" in _one_line(capsys)
    assert builds == [] and (tmp_path / "a-file").read_text() == "mine" and len(list(tmp_path.iterdir())) == 1


def test_read_only_out_is_a_usage_error_before_any_work(tmp_path, builds, monkeypatch, capsys):
    import builtins
    import errno
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real_os_open, real_open = os.open, builtins.open

    def refuse(path):  # what a read-only folder answers (as root, chmod would not stop us)
        if os.path.dirname(os.fspath(path)) == str(locked):
            raise PermissionError(errno.EROFS, "Read-only file system", os.fspath(path))

    monkeypatch.setattr(os, "open", lambda path, *a, **k: refuse(path) or real_os_open(path, *a, **k))
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: (isinstance(path, (str, os.PathLike)) and refuse(path))
                        or real_open(path, *a, **k))
    assert main([*ARGS, "--out", str(locked / "m.onnx")]) == 2
    assert "cannot write" in (line := _one_line(capsys)) and "Read-only file system" in line
    assert builds == [] and list(locked.iterdir()) == []


@pytest.mark.parametrize("option", [["--opset", "99"], ["--opset", "9"], ["--tolerance", "-1"], ["--tolerance", "nan"]])
def test_unsupported_opset_or_tolerance_is_a_usage_error_before_any_work(tmp_path, builds, capsys, option):
    assert main([*ARGS, "--out", str(tmp_path / "m.onnx"), *option]) == 2
    line = _one_line(capsys)
    assert ("opset must be one of 14..20" in line) if option[0] == "--opset" else ("tolerance must be a number" in line)
    assert builds == [] and list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_names_the_extra_before_any_work(tmp_path, builds, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    assert main([*ARGS, "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'avex-hub[export]'" in _one_line(capsys) and builds == []


def test_oldest_and_newest_supported_opsets_export_without_warnings(tmp_path, model):
    import warnings

    from avex_hub.integrations.onnx_export import OPSETS

    for opset in (OPSETS.start, OPSETS.stop - 1):
        path = tmp_path / f"o{opset}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch warns above its newest supported opset (it would write 23)
            worst = export_onnx(model, path, opset=opset, tolerance=1e-4)
        assert max(worst.values()) <= 1e-4 and read_onnx_metadata(path)["opset"] == opset


def test_torch_failing_to_export_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from avex_hub.integrations import onnx_export

    # Opset 13 has no attention operator: torch's exporter itself fails (allowed here to reach it).
    monkeypatch.setattr(onnx_export, "OPSETS", range(13, 21))
    assert main([*ARGS, "--out", str(tmp_path / "m.onnx"), "--opset", "13"]) == 1
    line = _one_line(capsys)
    assert "could not export esp_aves2_sl_beats_all at opset 13" in line and "scaled_dot_product_attention" in line
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno

    import onnx

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))

    monkeypatch.setattr(onnx, "save_model", full)
    assert main([*ARGS, "--out", str(tmp_path / "m.onnx")]) == 1
    assert "No space left on device" in _one_line(capsys) and list(tmp_path.iterdir()) == []


def test_unreadable_weights_are_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from avex_hub.hub import loading

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/cache/model.safetensors")

    monkeypatch.setattr(loading, "build_model", unreadable)
    assert main([*ARGS, "--out", str(tmp_path / "m.onnx")]) == 1
    assert "cannot read the weights at /cache/model.safetensors (Permission denied)" in _one_line(capsys)
