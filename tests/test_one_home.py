"""One home for each fact: the sample rate, the window length, the probe's hidden size and the mean/max pooling
check are stated once and read everywhere else (issue 12, "One home for each fact")."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import avex_hub
from avex_hub.audio.arrays import SAMPLE_RATE, WINDOW_S
from avex_hub.encoder.model import POOLINGS, check_pooling
from avex_hub.encoder.preprocessing import Preprocessing
from conftest import FIXTURE, tones

PACKAGE_DIR = Path(avex_hub.__file__).parent


def _constants(value_test) -> list[str]:
    """``module:line`` of every numeric constant in the package source for which ``value_test`` holds."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and value_test(node.value):
                found.append(f"{path.relative_to(PACKAGE_DIR)}:{node.lineno}")
    return found


def test_the_sample_rate_is_stated_once():
    assert SAMPLE_RATE == 16_000 and Preprocessing().sample_rate == SAMPLE_RATE
    assert avex_hub.encoder.fbank.FbankConfig().sample_rate == SAMPLE_RATE
    # 16000 appears as a number only in the audio contract (tutorial.py's list of example file rates aside)
    assert [p for p in _constants(lambda v: v == 16_000) if not p.startswith("tutorial.py")] == \
        [f"audio{'/'}arrays.py:{_line_of('audio/arrays.py', 'SAMPLE_RATE = ')}"]


def _line_of(module: str, text: str) -> int:
    lines = (PACKAGE_DIR / module).read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(text))


def test_defaults_of_the_rate_and_window_come_from_the_contract():
    from avex_hub.audio import augment, datasets, synthetic, windows
    from avex_hub.embed.extract import ClipList
    from avex_hub.integrations.sklearn import AvexSklearnEmbedder

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    for fn in (synthetic.synthesize_call, synthetic.make_synthetic_dataset, augment.AddBackgroundNoise,
               AvexSklearnEmbedder):
        assert default(fn, "sample_rate") == SAMPLE_RATE, fn
    assert WINDOW_S == 10.0 and Preprocessing().window_s == WINDOW_S
    for fn, name in ((windows.windows_from_array, "window_s"), (windows.stream_windows, "window_s"),
                     (windows.iter_array_windows, "window_s"), (datasets.AudioDataset, "clip_s"),
                     (ClipList, "max_s"), (AvexSklearnEmbedder, "max_s")):
        assert default(fn, name) == WINDOW_S, fn
    # 10.0 as a window length is stated once: what is left are 10 ms frame shifts and 10 dB arithmetic
    assert sorted(p.split(":")[0] for p in _constants(lambda v: v == 10.0 and isinstance(v, float))) == sorted(
        ["audio/arrays.py", "encoder/beats.py", "encoder/fbank.py", "audio/synthetic/dataset.py",
         "audio/synthetic/dataset.py", "audio/augment.py", "audio/augment.py", "audio/augment.py"])


def test_the_window_where_a_model_is_at_hand_is_the_models(tmp_path):
    from avex_hub import build_model
    from avex_hub.cli import build_parser
    from avex_hub.embed.inference import embed_files, inference_settings

    model = build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE)
    assert inference_settings(model, "embed").window_s == 10.0
    model.preprocessing = dataclasses.replace(model.preprocessing, window_s=2.0)
    settings = inference_settings(model, "embed")
    assert settings.window_s == 2.0 and settings.hop_s == 2.0
    assert inference_settings(model, "embed", window_s=3.0).window_s == 3.0  # an explicit window still wins
    sf.write(tmp_path / "five.wav", tones(5, SAMPLE_RATE, seed=4), SAMPLE_RATE, subtype="FLOAT")
    result = embed_files(model, tmp_path / "five.wav", num_workers=0, progress=False)
    np.testing.assert_allclose(result.start_s, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(result.end_s, [2.0, 4.0, 5.0])
    args = build_parser().parse_args(["embed", str(tmp_path), "--out", str(tmp_path / "e.parquet")])
    assert args.window is None  # resolved to the loaded model's preprocessing.window_s


def test_the_probe_hidden_size_is_stated_once(model):
    from avex_hub.heads import evaluation, probes

    assert probes.DEFAULT_HIDDEN_DIM == 256
    assert inspect.signature(probes.Probe).parameters["hidden_dim"].default == probes.DEFAULT_HIDDEN_DIM
    assert inspect.signature(probes.mlp_probe).parameters["hidden_dim"].default == probes.DEFAULT_HIDDEN_DIM
    assert evaluation._mlp_defaults() == {"hidden_dim": probes.DEFAULT_HIDDEN_DIM, "dropout": 0.1}
    head = probes.attention_probe(model, 3)
    assert head.config()["hidden_dim"] == probes.DEFAULT_HIDDEN_DIM
    assert probes.attention_probe(model, 3, hidden_dim=32).config()["hidden_dim"] == 32
    assert [p for p in _constants(lambda v: v == 256) if p.startswith("heads/")] == \
        [f"heads/probe_module.py:{_line_of('heads/probe_module.py', 'DEFAULT_HIDDEN_DIM = ')}"]


def test_one_pooling_check(model):
    from avex_hub.cli import build_parser
    from avex_hub.embed.extract import extract_embeddings
    from avex_hub.embed.inference import inference_settings
    from avex_hub.heads.probes import PROBE_POOLINGS, linear_probe
    from avex_hub.integrations.sklearn import AvexSklearnEmbedder

    assert POOLINGS == ("mean", "max") and PROBE_POOLINGS == (*POOLINGS, "attention")
    for good in POOLINGS:
        check_pooling(good)
    for bad in ("median", "Mean", None, ["mean"]):
        with pytest.raises(ValueError, match=rf"pooling must be 'mean' or 'max', got {bad!r}".replace("[", r"\[")):
            check_pooling(bad)
    with pytest.raises(ValueError, match="clip_pooling must be 'mean' or 'max', got 'sum'"):
        check_pooling("sum", "clip_pooling")
    calls = [lambda: extract_embeddings(model, [np.zeros(4000, np.float32)], pooling="sum", progress=False),
             lambda: inference_settings(model, "embed", pooling="sum"),
             lambda: AvexSklearnEmbedder(model, pooling="sum").fit([np.zeros(4000, np.float32)]),
             lambda: model.embed(np.zeros(4000, np.float32), sample_rate=SAMPLE_RATE, pooling="sum"),
             lambda: model.pool(np.zeros((1, 2, 3)), None, "sum")]
    for call in calls:
        with pytest.raises(ValueError, match="pooling must be 'mean' or 'max', got 'sum'"):
            call()
    with pytest.raises(ValueError, match="linear_probe pooling must be 'mean' or 'max', got 'attention'; use "
                                         "attention_probe"):
        linear_probe(model, 3, pooling="attention")
    parser = build_parser()
    embed = next(a for a in parser._subparsers._group_actions[0].choices["embed"]._actions
                 if a.dest == "pooling")
    assert tuple(embed.choices) == POOLINGS
    # ("mean", "max") is written once, in encoder/model.py
    written = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Tuple) and [getattr(e, "value", None) for e in node.elts] == ["mean", "max"]:
                written.append(str(path.relative_to(PACKAGE_DIR)))
    # agile's --combine / combine= is how several queries' scores are combined, not pooling over frames
    assert sorted(written) == ["cli/agile.py", "encoder/model.py", "integrations/agile/search.py"]


def test_beats_config_keeps_no_copy_of_the_preprocessing(model, tiny_dir):
    import json

    from avex_hub.encoder.beats import PREPROCESSING_KEYS, BEATsConfig
    from avex_hub.hub.provenance import Provenance, config_digest

    names = {f.name for f in dataclasses.fields(BEATsConfig)}
    assert not names & {"sample_frequency", "fbank_mean", "fbank_std"}
    assert PREPROCESSING_KEYS == {"sample_frequency": "sample_rate", "fbank_mean": "fbank_mean",
                                  "fbank_std": "fbank_std"}
    stated = json.loads((tiny_dir / "config.json").read_text())
    assert stated["sample_frequency"] == 16000.0  # a reference config.json states them: read, checked, dropped
    assert BEATsConfig.from_dict(stated) == model.config
    # a head recorded while BEATsConfig still had sample_frequency reads as one recorded now
    now = Provenance.from_model(model, layers=[model.num_layers], pooling="mean").to_dict()
    before = {**now, "backbone_config": {**now["backbone_config"], "sample_frequency": 16000.0}}
    text = json.dumps(before["backbone_config"], sort_keys=True, separators=(",", ":"))
    import hashlib

    before["backbone_config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    assert before["backbone_config_sha256"] != config_digest(model.config)
    old = Provenance.from_dict(before)
    assert old == Provenance.from_dict(now) and old.backbone_config_sha256 == config_digest(model.config)
    assert [d for d in old.differences(model) if not d.startswith("weights:")] == []
    # an edited record (its digest does not match it) is kept as recorded, and the difference is named
    edited = Provenance.from_dict({**before, "backbone_config": {**before["backbone_config"], "sample_frequency": 8e3}})
    assert edited.backbone_config["sample_frequency"] == 8e3
    assert "config.sample_frequency: head 8000.0, backbone '(absent)'" in edited.differences(model)
