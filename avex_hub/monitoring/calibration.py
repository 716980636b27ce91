"""Calibration from reviewed clips, and the thresholds file that carries it.

Per label, a logistic model of "the window holds the label" on the score's logit (the approach of Wood & Kahl
2024, J. Ornithol.): ``P(correct | s) = sigmoid(a + b * logit(s))``, fitted by Newton's method on the ``yes``/``no``
verdicts (``unsure`` ones are counted, not fitted) with a weak Gaussian prior (sd 10) that keeps the estimates
finite when verdicts separate perfectly. Its uncertainty is the inverse Hessian at the optimum; the 95% band of a
probability is ``sigmoid(eta +- 1.96 se(eta))``.

Precision at a threshold ``t`` is the mean calibrated probability over all windows scoring at least ``t``, taken
from the label's score histogram (recorded by ``review`` over every window of the score table, so the stratified
sample of reviews does not bias it). The threshold for a target precision is the lowest ``t`` that reaches it;
``threshold_conservative`` reaches it with the lower band. No threshold, and a status saying why, when: fewer than
``min_reviews`` yes/no verdicts or no verdict of one kind (``too few reviews``), a slope <= 0 (``scores do not
separate``), or the target is not reached by any threshold at or below the highest reviewed score
(``cannot be reached with these reviews``).

The thresholds file (JSON, or CSV with one row per label) records the source of the scores (the model's weights
digest, and the probe's when a probe scored them); applying it to scores of anything else is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .scores import ScoreSource

__all__ = ["LOGIT_EDGES", "score_histogram", "fit_logistic", "LabelCalibration", "calibrate_label", "Thresholds",
           "OK", "TOO_FEW", "NO_SEPARATION", "UNREACHABLE"]

LOGIT_EDGES = np.linspace(-12.0, 12.0, 481)  # 0.05 logit bins; scores beyond +-12 fall in the end bins
FORMAT, FORMAT_VERSION = "avex-hub thresholds", 1
OK, TOO_FEW, NO_SEPARATION, UNREACHABLE = ("ok", "too few reviews", "scores do not separate",
                                           "cannot be reached with these reviews")
_PRIOR_PRECISION = 0.01  # 1 / sd**2 of the Gaussian prior on intercept and slope
_Z95 = 1.959963984540054


def logit(scores) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(s) - np.log1p(-s)


def _sigmoid(x) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def score_histogram(scores) -> list[int]:
    """Counts of ``scores`` in the bins of :data:`LOGIT_EDGES` (logit scale; the end bins take the tails)."""
    x = np.clip(logit(scores), LOGIT_EDGES[0], LOGIT_EDGES[-1] - 1e-9)
    return np.histogram(x, LOGIT_EDGES)[0].astype(int).tolist()


def fit_logistic(x, y, *, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(coefficients [a, b], covariance [2, 2])`` of ``P(y = 1) = sigmoid(a + b x)`` (Newton, weak prior)."""
    X = np.column_stack([np.ones(len(x)), np.asarray(x, dtype=np.float64)])
    y = np.asarray(y, dtype=np.float64)
    beta = np.zeros(2)
    for _ in range(iterations):
        p = _sigmoid(X @ beta)
        hessian = (X.T * (p * (1 - p))) @ X + _PRIOR_PRECISION * np.eye(2)
        step = np.linalg.solve(hessian, X.T @ (y - p) - _PRIOR_PRECISION * beta)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    p = _sigmoid(X @ beta)
    return beta, np.linalg.inv((X.T * (p * (1 - p))) @ X + _PRIOR_PRECISION * np.eye(2))


@dataclass(frozen=True)
class LabelCalibration:
    """One label's calibration: ``status`` (:data:`OK` or why there is no threshold), the review counts, the model
    (``intercept``, ``slope``, ``covariance``) and the threshold with its estimated precision and 95% band."""

    label: str
    status: str
    reviews: dict = field(default_factory=dict)
    intercept: float | None = None
    slope: float | None = None
    covariance: list | None = None
    threshold: float | None = None
    threshold_conservative: float | None = None
    precision: float | None = None
    precision_low: float | None = None
    precision_high: float | None = None
    note: str = ""

    @property
    def fitted(self) -> bool:
        return self.slope is not None

    def probability(self, scores) -> np.ndarray:
        """Calibrated probabilities of ``scores`` (raw sigmoid scores)."""
        return _sigmoid(self.intercept + self.slope * logit(scores))

    def band(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """The 95% band ``(low, high)`` of :meth:`probability`."""
        x = logit(scores)
        cov = np.asarray(self.covariance)
        se = np.sqrt(np.maximum(cov[0, 0] + 2 * x * cov[0, 1] + x * x * cov[1, 1], 0.0))
        eta = self.intercept + self.slope * x
        return _sigmoid(eta - _Z95 * se), _sigmoid(eta + _Z95 * se)

    def precision_curve(self, histogram) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(thresholds, precision, low, high)`` over the histogram's bin edges (scores); NaN above all windows."""
        counts = np.asarray(histogram, dtype=np.float64)
        centres = _sigmoid(0.5 * (LOGIT_EDGES[:-1] + LOGIT_EDGES[1:]))
        curves = [self.probability(centres), *self.band(centres)]
        above = np.cumsum(counts[::-1])[::-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = [np.cumsum((counts * c)[::-1])[::-1] / above for c in curves]
        return (_sigmoid(LOGIT_EDGES[:-1]), *out)


def _lowest(thresholds: np.ndarray, precision: np.ndarray, target: float, highest: float) -> float | None:
    ok = np.flatnonzero((precision >= target) & (thresholds <= highest))
    return float(thresholds[ok[0]]) if len(ok) else None


def calibrate_label(label: str, scores, verdicts, histogram, *, target_precision: float,
                    min_reviews: int = 20) -> LabelCalibration:
    """Fit one label from ``scores`` and ``verdicts`` (``"yes"``, ``"no"``, ``"unsure"``, ``""`` for unreviewed)."""
    scores, verdicts = np.asarray(scores, dtype=np.float64), np.asarray(verdicts, dtype=object)
    reviews = {v: int((verdicts == v).sum()) for v in ("yes", "no", "unsure")}
    reviews["unreviewed"] = int((verdicts == "").sum())
    counted = (verdicts == "yes") | (verdicts == "no")
    if counted.sum() < min_reviews or not reviews["yes"] or not reviews["no"]:
        return LabelCalibration(label, TOO_FEW, reviews, note=f"{int(counted.sum())} yes/no verdicts ({reviews['yes']} "
                                f"yes, {reviews['no']} no); needs at least {min_reviews}, with both kinds")
    beta, cov = fit_logistic(logit(scores[counted]), verdicts[counted] == "yes")
    fitted = LabelCalibration(label, OK, reviews, float(beta[0]), float(beta[1]), cov.tolist())
    if beta[1] <= 0:
        return LabelCalibration(**{**asdict(fitted), "status": NO_SEPARATION,
                                   "note": f"the probability of a correct window falls as the score rises (slope "
                                           f"{beta[1]:.3f}); review more clips, or the scores do not find this label"})
    thresholds, precision, low, high = fitted.precision_curve(histogram)
    highest = float(scores[counted].max())
    best = _lowest(thresholds, precision, target_precision, highest)
    if best is None:
        reached = np.nanmax(np.where(thresholds <= highest, precision, np.nan))
        return LabelCalibration(**{**asdict(fitted), "status": UNREACHABLE,
                                   "note": f"estimated precision reaches at most {reached:.3f} at scores up to the "
                                           f"highest reviewed ({highest:.4f}); review more high-scoring clips or "
                                           "lower the target"})
    k = int(np.flatnonzero(thresholds == best)[0])
    return LabelCalibration(**{**asdict(fitted), "threshold": best,
                               "threshold_conservative": _lowest(thresholds, low, target_precision, highest),
                               "precision": float(precision[k]), "precision_low": float(low[k]),
                               "precision_high": float(high[k])})


class Thresholds:
    """Per-label calibrations for one score source; saved as JSON or CSV (by the file's suffix)."""

    def __init__(self, source: ScoreSource, target_precision: float, labels: dict[str, LabelCalibration]) -> None:
        self.source, self.target_precision, self.labels = source, float(target_precision), labels

    def thresholds(self) -> dict[str, float]:
        """``{label: threshold}`` of the labels that have one."""
        return {k: c.threshold for k, c in self.labels.items() if c.threshold is not None}

    def probability(self, label: str, scores) -> np.ndarray | float | None:
        """Calibrated probability of ``label``'s ``scores``; None for a label without a fitted model."""
        c = self.labels.get(label)
        if c is None or not c.fitted:
            return None
        p = c.probability(scores)
        return float(p) if np.ndim(p) == 0 else p

    def detected(self, label: str, scores) -> np.ndarray | bool | None:
        """Whether each of ``label``'s ``scores`` is at or above its threshold; None for a label without one."""
        threshold = self.thresholds().get(label)
        if threshold is None:
            return None
        found = np.asarray(scores, np.float64) >= threshold
        return bool(found) if found.ndim == 0 else found

    def check(self, source: ScoreSource, where: str = "the thresholds file") -> None:
        """Refuse scores from another model or probe than the one these thresholds were fitted to."""
        if source.weights_sha256 is None:
            raise ValueError(f"{where} was fitted to scores of weights {self.source.weights_sha256}; these scores do "
                             "not say what made them (no <scores>.settings.json): pass --probe FILE for a probe's "
                             "scores, or score them again with avex-hub")
        diffs = self.source.differences(source)
        if diffs:
            raise ValueError(f"{where} was fitted to scores of another model ({'; '.join(diffs)}); review and "
                             "calibrate this model's scores (avex-hub review, avex-hub calibrate)")

    def check_settings(self, settings: dict, where: str = "the thresholds file") -> None:
        """:meth:`check` for the stored settings of a run (``InferenceSettings.to_dict()``: a classify run's)."""
        self.check(ScoreSource.from_settings(settings), where)

    # -- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        from ..embed.outputs import atomic_path
        from .tables import write_table

        path = Path(path)
        if path.suffix.lower() == ".csv":
            write_table(path, _CSV_COLUMNS, (self._csv_row(c) for c in self.labels.values()))
            return path
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "source": self.source.to_dict(),
                "target_precision": self.target_precision, "labels": {k: asdict(c) for k, c in self.labels.items()}}
        with atomic_path(path, ".json") as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return path

    def _csv_row(self, c: LabelCalibration) -> list:
        cov = np.asarray(c.covariance) if c.covariance is not None else np.full((2, 2), np.nan)
        return [c.label, c.status, c.threshold, c.threshold_conservative, self.target_precision, c.precision,
                c.precision_low, c.precision_high, c.intercept, c.slope, cov[0, 0], cov[0, 1], cov[1, 1],
                c.reviews.get("yes", 0), c.reviews.get("no", 0), c.reviews.get("unsure", 0),
                c.reviews.get("unreviewed", 0), self.source.weights_sha256, self.source.probe_sha256,
                self.source.model, FORMAT_VERSION, c.note]

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Thresholds":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"thresholds file {path} not found; write one with avex-hub calibrate")
        try:
            return cls._load_csv(path) if path.suffix.lower() == ".csv" else cls._load_json(path)
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a thresholds file written by avex-hub calibrate ({type(error).__name__}: "
                             f"{error}); write it again") from None

    @classmethod
    def _load_json(cls, path: Path) -> "Thresholds":
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: not a thresholds file of format {FORMAT!r} version {FORMAT_VERSION}")
        labels = {k: LabelCalibration(**v) for k, v in data["labels"].items()}
        return cls(ScoreSource(**data["source"]), data["target_precision"], labels)

    @classmethod
    def _load_csv(cls, path: Path) -> "Thresholds":
        from .tables import read_table

        _, rows = read_table(path, required=tuple(_CSV_COLUMNS))
        if not rows:
            raise ValueError(f"{path}: no labels in the thresholds file")
        num = lambda text: float(text) if text not in ("", None) else None  # noqa: E731
        sources = {(r["weights_sha256"] or None, r["probe_sha256"] or None, r["model"] or None) for _, r in rows}
        if len(sources) != 1 or {r["format_version"] for _, r in rows} != {str(FORMAT_VERSION)}:
            raise ValueError(f"{path}: rows from several sources or format versions; keep one calibration per file")
        labels = {}
        for _, r in rows:
            fitted = r["slope"] != ""
            cov = [[num(r["cov_intercept"]), num(r["cov_intercept_slope"])],
                   [num(r["cov_intercept_slope"]), num(r["cov_slope"])]] if fitted else None
            labels[r["label"]] = LabelCalibration(
                r["label"], r["status"], {k: int(r[k]) for k in ("yes", "no", "unsure", "unreviewed")},
                num(r["intercept"]), num(r["slope"]), cov, num(r["threshold"]), num(r["threshold_conservative"]),
                num(r["precision"]), num(r["precision_low"]), num(r["precision_high"]), r["note"])
        return cls(ScoreSource(*next(iter(sources))), float(rows[0][1]["target_precision"]), labels)


_CSV_COLUMNS = ["label", "status", "threshold", "threshold_conservative", "target_precision", "precision",
                "precision_low", "precision_high", "intercept", "slope", "cov_intercept", "cov_intercept_slope",
                "cov_slope", "yes", "no", "unsure", "unreviewed", "weights_sha256", "probe_sha256", "model",
                "format_version", "note"]
