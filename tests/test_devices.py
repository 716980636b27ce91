"""``device=None`` has one meaning wherever a model or tensor is at hand (issue 12): where it already is, and the CPU
for anything on no device. One function decides (``avex_hub.encoder.precision.device_for``) and every caller states
the same sentence (``DEVICE_NONE``)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avex_hub.embed.extract import Embeddings
from avex_hub.encoder.precision import DEVICE_NONE, device_for, resolve_device
from avex_hub.heads import evaluation, metrics, retrieval, training
from avex_hub.heads.evaluation import evaluate
from avex_hub.heads.metrics import retrieval_metrics
from avex_hub.heads.probes import linear_probe
from avex_hub.heads.training import predict, train_probe
from conftest import blobs

sklearn_embedder = pytest.importorskip("avex_hub.integrations.sklearn")
CALLER_MODULES = (training, evaluation, retrieval, sklearn_embedder)  # metrics re-exports retrieval's
BAD = r"device must be 'cpu', 'cuda', 'cuda:N', another torch device or None, got 'gpu'"


def _callers() -> list:
    """The public functions and classes of the callers' modules that take ``device``."""
    found = []
    for module in CALLER_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and "device" in inspect.signature(obj).parameters:
                found.append(obj)
    return found


def test_every_caller_states_the_one_meaning():
    callers = _callers()
    assert {c.__name__ for c in callers} == {
        "ExtractOptions", "predict", "train_probe", "evaluate", "retrieval_per_query", "retrieval_metrics",
        "retrieval_roc_auc", "retrieval_precision_at_1", "AvexSklearnEmbedder"}
    sentence = " ".join(DEVICE_NONE.split())
    assert [c.__qualname__ for c in callers if sentence not in " ".join(inspect.getdoc(c).split())] == []


def test_one_function_decides():
    # The callers ask device_for (evaluation through training's ExtractOptions); none builds a device itself.
    for module in CALLER_MODULES:
        source = Path(module.__file__).read_text(encoding="utf-8")
        assert "torch.device(" not in source and ".parameters()).device" not in source, module.__name__
        assert ("device_for(" in source) != (module is evaluation), module.__name__


def test_device_for_keeps_things_where_they_are():
    on_meta = nn.Linear(2, 2, device="meta")  # neither the CPU nor CUDA: only "where it already is" gives meta
    assert device_for(on_meta) == torch.device("meta")
    assert device_for(torch.zeros(2, device="meta")) == torch.device("meta")
    assert device_for(nn.Identity()) == torch.device("cpu")  # a module holding no tensor
    buffered = nn.BatchNorm1d(2, affine=False).to("meta")  # buffers only
    assert device_for(buffered) == torch.device("meta")
    for other in (np.zeros(3), [1.0, 2.0], None):
        assert device_for(other) == torch.device("cpu")
    assert device_for(on_meta, "cpu") == torch.device("cpu")  # a device given wins, checked
    assert device_for(on_meta, "auto") == resolve_device("auto")
    assert resolve_device(None) == torch.device("cpu")  # nothing at hand to stay with
    with pytest.raises(ValueError, match=BAD):
        device_for(on_meta, "gpu")
    with pytest.raises(ValueError, match="got 1.5"):
        resolve_device(1.5)


@pytest.fixture
def cuda_said_available(monkeypatch):
    """torch claims CUDA: a caller that took ``device=None`` as "CUDA when available" would try to move there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_callers_stay_on_the_cpu_with_device_none(model, cuda_said_available):
    x, y = blobs(60, 3, 64, seed=0)
    emb = Embeddings.from_arrays(x, y, layers=[3])
    probe = linear_probe(model, 3)
    result = train_probe(probe, emb, epochs=2, progress=False)
    assert result.best_epoch >= 1 and device_for(probe).type == "cpu" and model.device.type == "cpu"
    logits = predict(probe, emb)
    assert logits.shape == (60, 3) and device_for(probe).type == "cpu"
    assert retrieval_metrics(x, y)["num_items"] == 60
    rows = evaluate(emb, seed=0, retrieval=False, clustering=False)
    assert [r.metric for r in rows] == ["accuracy"]
    audio = (torch.randn(6, 4000, generator=torch.Generator().manual_seed(0)) * 0.1).numpy()
    embedder = sklearn_embedder.AvexSklearnEmbedder(model).fit(list(audio))
    assert embedder.transform(list(audio)).shape == (6, 64) and model.device.type == "cpu"


def test_file_pipelines_and_the_archive_stay_with_the_model(tmp_path, cuda_said_available):
    # The file pipelines and agile used to read device=None as "CUDA when available" and move the model there.
    import soundfile as sf

    import avex_hub
    from avex_hub.embed.inference import embed_files
    from avex_hub.encoder import precision
    from conftest import FIXTURE

    tiny = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=FIXTURE)
    path = tmp_path / "a.wav"
    sf.write(path, np.random.default_rng(0).standard_normal(24000).astype("float32") * 0.1, 16000)
    assert precision.prepare_for_inference(tiny, "fp32").device.type == "cpu"
    result = embed_files(tiny, [path], num_workers=0, progress=False)
    assert len(result) == 1 and not result.failures and tiny.device.type == "cpu"  # one 1.5 s window
    agile = pytest.importorskip("avex_hub.integrations.agile")
    try:
        adapter = agile.AvexEmbeddingModel.from_model(tiny)
    except ImportError:
        pytest.skip("perch-hoplite is not installed")
    assert adapter._device.type == "cpu" and tiny.device.type == "cpu"


def test_an_explicit_cpu_gives_the_same_results(model):
    x, y = blobs(60, 3, 64, seed=1)
    emb = Embeddings.from_arrays(x, y, layers=[3])
    implicit, explicit = linear_probe(model, 3, seed=2), linear_probe(model, 3, seed=2)
    first = train_probe(implicit, emb, epochs=3, progress=False)
    second = train_probe(explicit, emb, epochs=3, device="cpu", progress=False)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    assert torch.equal(predict(implicit, emb), predict(explicit, emb, device=torch.device("cpu")))
    assert retrieval_metrics(x, y, device="cpu") == retrieval_metrics(x, y)
    assert evaluate(emb, seed=0, device="cpu") == evaluate(emb, seed=0)
    audio = list((torch.randn(4, 4000, generator=torch.Generator().manual_seed(1)) * 0.1).numpy())
    np.testing.assert_array_equal(sklearn_embedder.AvexSklearnEmbedder(model, device="cpu").fit(audio).transform(audio),
                                  sklearn_embedder.AvexSklearnEmbedder(model).fit(audio).transform(audio))


def test_a_bad_device_is_refused_by_every_caller_before_any_work(model):
    x, y = blobs(30, 3, 64, seed=0)
    emb = Embeddings.from_arrays(x, y, layers=[3])
    calls = {
        "train_probe": lambda: train_probe(linear_probe(model, 3), emb, device="gpu", progress=False),
        "predict": lambda: predict(linear_probe(model, 3), emb, device="gpu"),
        "evaluate (embeddings)": lambda: evaluate(emb, device="gpu"),
        "evaluate (model)": lambda: evaluate(model, (object(), object()), device="gpu"),  # before the splits are read
        "retrieval_metrics": lambda: retrieval_metrics(x, y, device="gpu"),
        "AvexSklearnEmbedder": lambda: sklearn_embedder.AvexSklearnEmbedder(model, device="gpu").fit([x[0].numpy()]),
        "AvexSklearnEmbedder by name": lambda: sklearn_embedder.AvexSklearnEmbedder(
            model_name="not built", device="gpu").fit([x[0].numpy()]),  # refused before a model is built
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=BAD):
            call()
        assert model.device.type == "cpu", name
