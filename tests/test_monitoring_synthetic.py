"""monitoring.synthetic and scores.score_with_probe: the synthetic survey's recorders write what our readers read,
its truth matches brute force, and a saved probe scores recordings with its source recorded."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.monitoring.deployments import Deployments
from avex_hub.monitoring.recordings import describe_recordings
from avex_hub.monitoring.scores import ScoreSource, score_with_probe
from avex_hub.monitoring.synthetic import make_synthetic_survey, train_survey_probe
from conftest import FIXTURE


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_synthetic_survey(tmp_path_factory.mktemp("survey"), sites=2, days=2, recording_s=20.0,
                                 training_recordings=1, calls_per_minute=12, seed=3)


def test_the_recorders_metadata_gives_each_file_its_start_site_and_recorder(survey):
    durations = {str(p): sf.info(str(p)).duration for p in survey.recordings}
    rows = describe_recordings(durations, deployments=Deployments.read(survey.deployments))
    assert [r.time_source for r in rows] == ["audiomoth comment"] * 2 + ["guano"] * 2
    assert [r.site for r in rows] == ["site_A", "site_A", "site_B", "site_B"] and not any(r.flag for r in rows)
    assert rows[2].recorder == "SMM07251" and rows[2].file.endswith("SMM07251_20260601_043000.wav")
    assert rows[3].start == dt.datetime(2026, 6, 2, 2, 30, tzinfo=dt.timezone.utc)
    assert (rows[0].latitude, rows[0].longitude) == (52.4, 13.3)


def test_the_calls_and_window_truth_match_brute_force(survey):
    calls = survey.call_table()
    assert sum(map(len, calls.values())) >= 10
    for file, items in calls.items():
        length = sf.info(file).duration
        spans = sorted((a, b) for _, a, b in items)
        assert all(0 <= a < b <= length and b - a <= 2.0 + 1e-6 for a, b in spans)  # bouts of at most 2 s
        assert all(later[0] - earlier[1] >= 5.0 - 1e-6 for earlier, later in zip(spans, spans[1:]))
    file = str(survey.training[0])
    starts = np.arange(0.0, 18.0, 0.5)
    truth = survey.window_truth([file] * len(starts), starts, starts + 2.0)
    for i, s in enumerate(starts):
        for label, a, b in calls[file]:
            if min(s + 2.0, b) - max(s, a) >= 0.5 * (b - a):
                assert truth[i, survey.labels.index(label)] == 1
    assert truth.sum() == sum(any(min(s + 2, b) - max(s, a) >= 0.5 * (b - a) for lab, a, b in calls[file]
                                  if lab == label) for s in starts for label in survey.labels)


def test_the_same_seed_writes_the_same_bytes(survey, tmp_path):
    again = make_synthetic_survey(tmp_path / "again", sites=2, days=2, recording_s=20.0, training_recordings=1,
                                  calls_per_minute=12, seed=3)
    digest = lambda paths: [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]  # noqa: E731
    assert digest(again.recordings + again.training) == digest(survey.recordings + survey.training)
    assert again.present == survey.present


def test_a_saved_probe_scores_every_window_for_every_label(survey, tmp_path, one_torch_thread):
    from avex_hub import build_model

    model = build_model("esp_aves2_sl_beats_all", checkpoint=str(FIXTURE))
    path = train_survey_probe(model, survey, tmp_path / "probe.safetensors", window_s=2.0, hop_s=1.0)
    table = score_with_probe(model, path, survey.recordings[:1], window_s=2.0, hop_s=1.0)
    assert table.labels == survey.labels and table.scores.shape == (19, len(survey.labels))
    np.testing.assert_array_equal(table.start_s, np.arange(19.0))
    assert table.source == ScoreSource.of_probe(path, window_s=2.0, hop_s=1.0)
    assert table.source.weights_sha256 == model.weights_sha256 and table.source.probe_sha256 is not None
    import avex_hub

    attention = avex_hub.attention_probe(model, 2)
    avex_hub.save_probe(attention, tmp_path / "attention.safetensors")
    with pytest.raises(ValueError, match="mean-pooled embeddings of a frozen backbone"):
        score_with_probe(model, tmp_path / "attention.safetensors", survey.recordings[:1], window_s=2.0, hop_s=1.0)
    # the same scores from an embed run's Parquet file, also when a window's layers lie in two row groups
    import pyarrow.parquet as pq

    from avex_hub.embed.inference import embed_files

    embedded = embed_files(model, survey.recordings[:1], window_s=2.0, hop_s=1.0, layers="all", progress=False)
    embedded.to_parquet(tmp_path / "emb.parquet")
    pq.write_table(pq.read_table(tmp_path / "emb.parquet"), tmp_path / "split.parquet", row_group_size=5)
    layers = model.layer_indices("all")
    assert pq.ParquetFile(tmp_path / "split.parquet").metadata.row_group(0).num_rows == 5 and 5 % len(layers) != 0
    again = score_with_probe(model, path, tmp_path / "split.parquet")
    np.testing.assert_allclose(again.scores, table.scores, atol=1e-5)
    assert again.start_s.tolist() == table.start_s.tolist() and again.source == table.source
    last = embed_files(model, survey.recordings[:1], window_s=2.0, hop_s=1.0, progress=False)
    last.to_parquet(tmp_path / "last.parquet")
    with pytest.raises(ValueError, match=rf"holds layers \[{layers[-1]}\] pooled by 'mean'.*--layers "
                                         rf"{','.join(map(str, layers))} --pooling mean"):
        score_with_probe(model, path, tmp_path / "last.parquet")
    with torch.no_grad():  # the probe on one window's embedding gives the table's score
        probe = avex_hub.load_probe(path, model)
        from avex_hub.audio.decoding import load_audio

        audio = load_audio(survey.recordings[0], start_s=3.0, end_s=5.0).waveform
        x = torch.stack([model.pooled_layers(audio, layers="all")[0]])
        np.testing.assert_allclose(torch.sigmoid(probe.forward_embeddings(x))[0].numpy(), table.scores[3], atol=1e-4)
