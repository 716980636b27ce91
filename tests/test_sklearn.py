"""The scikit-learn embedder: parameters and cloning, pipelines and cross-validation on arrays and on files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from avex_hub.audio.resampling import resample
from avex_hub.audio.datasets import AudioDataset
from avex_hub.embed.extract import extract_embeddings
from avex_hub.integrations.sklearn import AvexSklearnEmbedder
from avex_hub.audio.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((18, 6000)) * 0.1).astype(np.float32)
    y = np.arange(18) % 2
    x[y == 1] = np.sin(np.arange(6000) * 0.3).astype(np.float32) * 0.3 + x[y == 1] * 0.2
    return x, y


def _manual_cv(model, x, y, cv, **embedder_kwargs) -> list[float]:
    """What cross_val_score must compute: per fold, embed, fit a logistic regression, score on the held-out part."""
    scores = []
    for train, test in cv.split(np.zeros(len(y)), y):
        embed = AvexSklearnEmbedder(model, **embedder_kwargs).fit([x[i] for i in train])
        clf = LogisticRegression(max_iter=1000).fit(embed.transform([x[i] for i in train]), y[train])
        scores.append(clf.score(embed.transform([x[i] for i in test]), y[test]))
    return scores


def test_params_and_clone_share_the_model(model):
    embedder = AvexSklearnEmbedder(model, layers=[1, 3], pooling="max", batch_size=4)
    params = embedder.get_params()
    assert params["model"] is model and params["layers"] == [1, 3] and params["pooling"] == "max"
    twin = clone(embedder)
    assert twin is not embedder and twin.model is model  # shared, not deep-copied
    assert twin.get_params() == params and twin.layers is not embedder.layers
    twin.set_params(pooling="mean", layers="all")
    assert twin.pooling == "mean" and embedder.pooling == "max"
    assert not hasattr(twin, "model_")  # a clone is unfitted
    pipe = clone(make_pipeline(embedder, LogisticRegression()))
    assert pipe.steps[0][1].model is model


def test_transform_matches_extraction_and_names(model, arrays):
    x, _ = arrays
    embedder = AvexSklearnEmbedder(model, layers=[1, 3]).fit(x)
    out = embedder.transform(x[:5])
    assert out.shape == (5, 128) and out.dtype == np.float32 and embedder.n_features_out_ == 128
    direct = extract_embeddings(model, torch.from_numpy(x[:5]), layers=[1, 3], progress=False).embeddings
    np.testing.assert_allclose(out, direct.reshape(5, -1).numpy(), atol=1e-6)  # layer-major concatenation
    names = embedder.get_feature_names_out()
    assert len(names) == 128 and names[0] == "avex_l1_0" and names[64] == "avex_l3_0" and names[-1] == "avex_l3_63"
    at_48k = resample(torch.from_numpy(x[:2]), 16000, 48000, warn=False).numpy()
    resampled = AvexSklearnEmbedder(model, layers=[1, 3], sample_rate=48000).fit(at_48k).transform(list(at_48k))
    back = resample(torch.from_numpy(at_48k), 48000, 16000, warn=False)
    expected = extract_embeddings(model, back, layers=[1, 3], progress=False).embeddings.reshape(2, -1).numpy()
    np.testing.assert_allclose(resampled, expected, atol=1e-5)


def test_cross_val_score_on_arrays(model, arrays):
    x, y = arrays
    cv = StratifiedKFold(3)
    pipe = make_pipeline(AvexSklearnEmbedder(model, batch_size=6), LogisticRegression(max_iter=1000))
    assert cross_val_score(pipe, x, y, cv=cv).tolist() == [1.0, 1.0, 1.0]  # tone vs noise: separable
    assert not hasattr(pipe.steps[0][1], "model_")  # cross_val_score fitted clones, not the pipeline
    noise_labels = np.random.default_rng(1).permutation(y)  # no signal: fold scores vary, and must match by hand
    scores = cross_val_score(pipe, x, noise_labels, cv=cv)
    assert len(set(scores.tolist())) > 1
    assert scores.tolist() == pytest.approx(_manual_cv(model, x, noise_labels, cv, batch_size=6))


def test_cross_val_score_on_files_with_a_named_checkpoint(model, tiny_dir, tmp_path):
    data = make_synthetic_dataset(tmp_path, num_species=2, individuals_per_species=2, clips_per_individual=3,
                                  clip_s=0.5)
    dataset = AudioDataset.from_manifest(data.manifest, clip_s=None)
    paths, y = [it.path for it in dataset.items], np.asarray(dataset.targets)
    by_name = AvexSklearnEmbedder(model_name="esp_aves2_sl_beats_all", checkpoint=tiny_dir)
    fitted = clone(by_name).fit(paths)
    assert fitted.model_.weights_sha256 == model.weights_sha256
    direct = extract_embeddings(model, dataset, progress=False).embeddings.numpy()
    np.testing.assert_allclose(fitted.transform(paths), direct, atol=1e-5)
    cv = StratifiedKFold(3)
    scores = cross_val_score(make_pipeline(by_name, LogisticRegression(max_iter=1000)), paths, y, cv=cv)
    assert scores.tolist() == pytest.approx(_manual_cv(model, paths, y, cv))


def test_bad_embedder_inputs(model, arrays):
    x, _ = arrays
    with pytest.raises(NotFittedError):
        AvexSklearnEmbedder(model).transform(x)
    with pytest.raises(TypeError, match="not a single string"):
        AvexSklearnEmbedder(model).fit("clip.wav")
    with pytest.raises(ValueError, match="pooling must be"):
        AvexSklearnEmbedder(model, pooling="sum").fit(x)
    with pytest.raises(TypeError, match="AvexModel or None"):
        AvexSklearnEmbedder(torch.nn.Linear(2, 2)).fit(x)
    with pytest.raises(ValueError, match="out of range"):
        AvexSklearnEmbedder(model, layers=[9]).fit(x)
    with pytest.raises(ValueError, match="empty"):
        AvexSklearnEmbedder(model).fit([])
    with pytest.raises(FileNotFoundError):
        AvexSklearnEmbedder(model).fit(["missing.wav"]).transform(["missing.wav"])
