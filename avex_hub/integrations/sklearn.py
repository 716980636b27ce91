"""A scikit-learn transformer that turns audio into esp-aves2 embeddings.

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from avex_hub.integrations.sklearn import AvexSklearnEmbedder

    pipe = make_pipeline(AvexSklearnEmbedder(model), LogisticRegression(max_iter=1000))
    cross_val_score(pipe, ["a.wav", "b.flac", ...], labels, cv=5)

``X`` is a list of file paths, a list of 1-D arrays (at ``sample_rate``), or a 2-D array ``[n, samples]``.
The model is given either as an object (``model=``) or by name (``model_name=`` plus ``checkpoint=`` for
local weights), in which case ``fit`` builds it. Cloning (``sklearn.base.clone``, as ``cross_val_score`` does)
shares a given model object instead of deep-copying it: the embedder only reads it, in inference mode.
This module is the only one in avex_hub that imports scikit-learn.
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..audio.arrays import SAMPLE_RATE, WINDOW_S
from ..embed.extract import ClipList, extract_embeddings
from ..encoder.model import AvexModel, check_pooling
from ..encoder.precision import device_for

__all__ = ["AvexSklearnEmbedder"]


class AvexSklearnEmbedder(TransformerMixin, BaseEstimator):
    """Audio -> pooled embeddings ``[n, C]`` (several layers: concatenated, ``[n, L * C]``).

    Args:
        model: an AvexModel (shared between clones, never modified), or None to build ``model_name``.
        model_name: a registered model name (``avex_hub.WEIGHTS``), used when ``model`` is None.
        checkpoint: local weights for ``model_name`` (a folder or ``.safetensors`` file).
        layers: ``"last"``, an int, a list of ints or ``"all"`` (layer 0 = encoder input).
        pooling: ``"mean"`` or ``"max"`` over the frames that are not padding.
        sample_rate: the rate of array inputs (files are read at their own rate); all go to 16 kHz.
        max_s: clips keep their first ``max_s`` seconds (None: whole clips).
        batch_size, num_workers, precision: as in :func:`avex_hub.embed.extract.extract_embeddings`.
        device: where the model embeds (a model built here is built there; a given one is moved there).
            ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device.
        progress: show a progress bar while embedding.
    """

    def __init__(self, model: AvexModel | None = None, *, model_name: str = "esp_aves2_sl_beats_all",
                 checkpoint=None, layers="last", pooling: str = "mean", sample_rate: int = SAMPLE_RATE,
                 max_s: float | None = WINDOW_S, batch_size: int = 16, num_workers: int = 0, device=None,
                 precision: str = "fp32", progress: bool = False) -> None:
        self.model = model
        self.model_name = model_name
        self.checkpoint = checkpoint
        self.layers = layers
        self.pooling = pooling
        self.sample_rate = sample_rate
        self.max_s = max_s
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.precision = precision
        self.progress = progress

    def __sklearn_clone__(self) -> "AvexSklearnEmbedder":
        # Share the (read-only) model; copy the other parameters as sklearn.base.clone would.
        params = {k: (v if k == "model" else copy.deepcopy(v)) for k, v in self.get_params(deep=False).items()}
        return type(self)(**params)

    def _resolve_model(self) -> AvexModel:
        if self.model is not None:
            if not isinstance(self.model, AvexModel):
                raise TypeError(f"model must be an avex_hub.AvexModel or None, got {type(self.model).__name__}")
            return self.model
        from ..hub.loading import build_model

        return build_model(self.model_name, checkpoint=self.checkpoint, device=self.device, progress=self.progress)

    def fit(self, X, y=None) -> "AvexSklearnEmbedder":
        """Resolve the model and the output width; nothing is learned (``X`` and ``y`` are only checked)."""
        check_pooling(self.pooling)
        self._check_input(X)
        device_for(self.model, self.device)  # a device that cannot be used fails here, before a model is built
        self.model_ = self._resolve_model()
        self.layer_indices_ = self.model_.layer_indices(self.layers)
        self.n_features_out_ = len(self.layer_indices_) * self.model_.embedding_dim
        return self

    @staticmethod
    def _check_input(X) -> None:
        if isinstance(X, (str, bytes)):
            raise TypeError("X must be a list of file paths or arrays, not a single string; wrap it in a list")
        if len(X) == 0:
            raise ValueError("X is empty; expected at least one file path or array")

    def transform(self, X) -> np.ndarray:
        """Embeddings ``[n, n_features_out_]`` float32 for the clips in ``X`` (same order)."""
        check_is_fitted(self, "model_")
        self._check_input(X)
        clips = list(X) if not (isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind == "f") else [X]
        data = ClipList(clips, sample_rate=self.sample_rate, max_s=self.max_s)
        emb = extract_embeddings(self.model_, data, layers=list(self.layer_indices_), pooling=self.pooling,
                                 batch_size=self.batch_size, num_workers=self.num_workers,
                                 device=device_for(self.model_, self.device),
                                 precision=self.precision, progress=self.progress)
        return emb.embeddings.reshape(len(data), -1).numpy()  # [n, L, C] -> [n, L * C], layer-major

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``avex_l<layer>_<channel>`` for each output column."""
        check_is_fitted(self, "model_")
        dim = self.model_.embedding_dim
        return np.asarray([f"avex_l{layer}_{c}" for layer in self.layer_indices_ for c in range(dim)], dtype=object)
