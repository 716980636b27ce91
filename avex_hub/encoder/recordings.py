"""Recordings of any length through the model: what ``AvexModel.predict`` and ``AvexModel.embed`` do with a file path
or an array (``sample_rate=``), on the one pipeline (:mod:`avex_hub.encoder.pipeline`).

A recording is cut into the model's windows (``preprocessing.window_s``, 10 s; the last one padded and masked, a
recording no longer than one window run at its own length: :func:`avex_hub.audio.windows.window_length`), files
streamed, run ``batch_size`` windows at a time (the device policy's default, :mod:`avex_hub.encoder.precision`).
``predict`` keeps per label the best window (memory: one row of scores per channel) or each window's top-k;
``embed`` each window's pooled embedding, or their mean (or max). Clipped or silent audio is scored but warned about
by name; a recording shorter than the model's shortest input is refused.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import torch

from .._warnings import user_stacklevel
from ..labels import match_species
from ..audio.arrays import MIN_SAMPLES, SAMPLE_RATE
from ..audio.batches import batch_windows
from ..audio.quality import AudioQualityWarning, QualityFlags
from ..audio.windows import Window, recording_windows
from .pipeline import BatchOutputs, Embeddings, Scores, run_batches
from .precision import batch_size_for
from .runtimes import torch_threads, window_model

__all__ = ["Prediction", "WindowPrediction", "WindowEmbeddings", "predict", "embed"]


@dataclass(frozen=True)
class Prediction:
    """One label of a top-k answer; ``score`` is a sigmoid probability (the head is multi-label).

    From :meth:`AvexModel.predict` on a recording, ``score`` is the label's best window score and
    ``start_s``/``end_s`` (seconds of the recording) are that window's span.
    """

    label: str
    index: int
    score: float
    start_s: float | None = None
    end_s: float | None = None
    probability: float | None = None  # with thresholds=: calibrated (None for a label without a fitted model)
    detected: bool | None = None  # with thresholds=: score >= the label's threshold (None without one)


@dataclass(frozen=True)
class WindowPrediction:
    """One label of one window's top-k (``predict(..., per_window=True)``): the values ``classify_files`` gives."""

    start_s: float  # seconds of the recording
    end_s: float  # end of the window's real audio
    label: str
    index: int
    score: float  # sigmoid probability
    probability: float | None = None  # with thresholds=, as in Prediction
    detected: bool | None = None


@dataclass(frozen=True)
class WindowEmbeddings:
    """Per-window embeddings of one recording (``embed(..., per_window=True)``), in time order."""

    embeddings: torch.Tensor  # float32 [windows, C]
    start_s: torch.Tensor  # float64 [windows], seconds of the recording
    end_s: torch.Tensor  # float64 [windows], end of each window's real audio


def predict(model, audio, sample_rate: int | None = None, *, top_k: int = 5, channels: str | int = "mix",
            per_window: bool = False, batch_size: int | None = None, thresholds=None, runtime: str = "torch",
            precision: str = "fp32", threads: int | None = None):
    """``AvexModel.predict`` on a recording, or on each of a list of them (see its docstring)."""
    if model.classifier is None:
        raise ValueError(f"{model.name} has no species head to predict with; use embed() or a probe")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1 (the number of labels to return), got {top_k!r}")
    asked = _thresholds_labels(model, thresholds)  # checked before any audio is read
    pick = _top(min(top_k, len(model.labels))) if asked is None else _asked(asked)
    run = window_model(model, Scores(), runtime=runtime, precision=precision, threads=threads)

    def one(item):
        results = run_batches(run, _batches(model, item, sample_rate, channels, batch_size, run.device))
        answers = (_window_rows if per_window else _best_windows)(results, pick, model.label_map)
        if thresholds is not None:
            answers = [[_calibrated(row, thresholds) for row in rows] for rows in answers]
        return answers if channels == "all" else answers[0]

    with torch_threads(threads if runtime == "torch" else None):
        return [one(item) for item in audio] if isinstance(audio, (list, tuple)) else one(audio)


def _thresholds_labels(model, thresholds) -> list[int] | None:
    """The label indices a thresholds object was fitted for (in its order), after refusing one fitted to another
    model's scores; None without thresholds. The object is a thresholds file read by
    :meth:`avex_hub.monitoring.calibration.Thresholds.load` (the monitoring layer sits above the model)."""
    if thresholds is None:
        return None
    if isinstance(thresholds, (str, os.PathLike)):
        raise TypeError(f"thresholds={str(thresholds)!r}: give the file read, thresholds=Thresholds.load(path) "
                        "(from avex_hub.monitoring.calibration import Thresholds), which reads and checks it once")
    thresholds.check_settings({"weights_sha256": model.weights_sha256, "model": model.name}, "thresholds")
    names = list(model.labels)
    return [names.index(label) for label in match_species(list(thresholds.labels), names, where="thresholds")]


def _calibrated(row, thresholds):
    """``row`` with its calibrated ``probability`` and ``detected`` from ``thresholds``."""
    probability, detected = thresholds.probability(row.label, row.score), thresholds.detected(row.label, row.score)
    return replace(row, probability=probability, detected=None if detected is None else bool(detected))


def _top(k: int):
    """Rows' top-k labels, best first: ``scores [n, labels] -> (values, indices)``, both ``[n, k]``."""
    return lambda scores: scores.topk(k, dim=-1)


def _asked(indices: list[int]):
    """The labels at ``indices``, in that order, for every row: ``scores [n, labels] -> (values, indices)``."""
    index = torch.tensor(indices)
    return lambda scores: (scores[..., index], index.expand(*scores.shape[:-1], len(indices)))


def embed(model, audio, sample_rate: int | None = None, *, layer: int = -1, pooling: str = "mean",
          channels: str | int = "mix", per_window: bool = False, clip_pooling: str = "mean",
          batch_size: int | None = None, runtime: str = "torch", precision: str = "fp32", threads: int | None = None):
    """``AvexModel.embed`` on a recording (see its docstring): :class:`WindowEmbeddings` per channel row, or the
    windows pooled by ``clip_pooling``: ``[C]``, or ``[channels, C]`` for ``channels="all"``."""
    run = window_model(model, Embeddings(tuple(model.layer_indices([layer])), pooling), runtime=runtime,
                       precision=precision, threads=threads)  # bad arguments fail first
    with torch_threads(threads if runtime == "torch" else None):
        rows = _embedded(run_batches(run, _batches(model, audio, sample_rate, channels, batch_size, run.device)))
    answers = [WindowEmbeddings(torch.stack([e for e, _, _ in windows]),
                                torch.tensor([s for _, s, _ in windows], dtype=torch.float64),
                                torch.tensor([e for _, _, e in windows], dtype=torch.float64))
               for _, windows in sorted(rows.items())]
    if not per_window:
        answers = [a.embeddings.mean(0) if clip_pooling == "mean" else a.embeddings.amax(0) for a in answers]
        if channels == "all":
            return torch.stack(answers)
    return answers if channels == "all" else answers[0]


def _embedded(results: Iterable[BatchOutputs]) -> dict[int, list]:
    """Per channel row, its windows' ``(embedding, start_s, end_s)`` in time order."""
    rows: dict[int, list] = {}
    order: dict[int, int] = {}
    for done in results:
        batch, vectors = done.batch, torch.from_numpy(done.outputs["embeddings"][:, 0])
        for i, row in enumerate(_number(batch.channel.tolist(), order)):
            rows.setdefault(row, []).append((vectors[i], float(batch.start_s[i]), float(batch.end_s[i])))
    return rows


def _batches(model, audio, sample_rate: int | None, channels, batch_size: int | None, device: torch.device):
    """A recording -> batches of its windows (``batch_size`` each, the device policy's default on ``device`` when
    None), whose quality flags are gathered per channel and warned about once the recording is done."""
    size = batch_size_for(device, batch_size)
    windows, source = recording_windows(audio, sample_rate, window_s=model.preprocessing.window_s, channels=channels)
    return batch_windows(_checked(windows, source), size)


def _checked(windows: Iterable[Window], source: str) -> Iterator[Window]:
    """``windows`` passed on; a recording shorter than the model's shortest input is refused at its first window,
    and clipped or silent channels are warned about by name at the end."""
    flags: dict[int | None, QualityFlags] = {}  # per source channel, in the order they come
    for window in windows:
        if window.index == 0 and window.flags.too_short:  # the whole recording is shorter than MIN_SAMPLES
            real = int((~window.padding_mask).sum())
            raise ValueError(
                f"{source} holds {real} samples at {SAMPLE_RATE // 1000} kHz ({real / SAMPLE_RATE:.3f} s): shorter than "
                f"the {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.3f} s) of one 16-frame patch, the model's "
                "shortest input; use a longer recording (avex-hub embed/classify keep such files, flagged too_short)")
        flags[window.channel] = _merged(flags.get(window.channel), window.flags)
        yield window
    _warn_quality(list(flags.values()), source)


def _merged(merged: QualityFlags | None, window: QualityFlags) -> QualityFlags:
    """A recording's flags from its windows': clipped if any window is, silent (too short) if all are."""
    if merged is None:
        return window
    return QualityFlags(clipped=merged.clipped or window.clipped, silent=merged.silent and window.silent,
                        too_short=merged.too_short and window.too_short)


def _warn_quality(flags: list[QualityFlags], source: str) -> None:
    for row, flag in enumerate(flags):
        problems = [name for name in ("clipped", "silent") if getattr(flag, name)]
        if problems:
            where = f"{source} (row {row})" if len(flags) > 1 else source
            warnings.warn(f"{where} is {' and '.join(problems)}; its scores are not reliable",
                          AudioQualityWarning, stacklevel=user_stacklevel())


def _best_windows(results: Iterable[BatchOutputs], pick, label_map) -> list[list[Prediction]]:
    """Per row: each label's max window score and where it was; ``pick``'s labels of those (:func:`_top`: top-k,
    :func:`_asked`; memory: one row of scores)."""
    best: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # row -> (max, start, end) [labels]
    order: dict[int, int] = {}
    for done in results:
        batch, scores = done.batch, torch.from_numpy(done.outputs["scores"])
        for i, row in enumerate(_number(batch.channel.tolist(), order)):
            start = torch.full_like(scores[i], float(batch.start_s[i]), dtype=torch.float64)
            end = torch.full_like(start, float(batch.end_s[i]))
            if row not in best:
                best[row] = (scores[i], start, end)
                continue
            top, starts, ends = best[row]
            better = scores[i] > top  # ties keep the earlier window
            best[row] = (torch.where(better, scores[i], top), torch.where(better, start, starts),
                         torch.where(better, end, ends))
    answers = []
    for _, (top, starts, ends) in sorted(best.items()):
        values, indices = pick(top)
        answers.append([Prediction(label_map.name(i), i, v, float(starts[i]), float(ends[i]))
                        for v, i in zip(values.tolist(), indices.tolist())])
    return answers


def _window_rows(results: Iterable[BatchOutputs], pick, label_map) -> list[list[WindowPrediction]]:
    """Per row: each window's ``pick`` of labels (top-k, or the asked ones) as time-stamped rows."""
    rows: dict[int, list[WindowPrediction]] = {}
    order: dict[int, int] = {}
    for done in results:
        batch = done.batch
        values, indices = pick(torch.from_numpy(done.outputs["scores"]))
        for i, row in enumerate(_number(batch.channel.tolist(), order)):
            rows.setdefault(row, []).extend(
                WindowPrediction(float(batch.start_s[i]), float(batch.end_s[i]), label_map.name(j), j, v)
                for v, j in zip(values[i].tolist(), indices[i].tolist()))
    return [rows[r] for r in sorted(rows)]


def _number(channels: list[int], order: dict[int, int]) -> list[int]:
    """The answer row of each window: source channels numbered in the order they first come."""
    return [order.setdefault(channel, len(order)) for channel in channels]
