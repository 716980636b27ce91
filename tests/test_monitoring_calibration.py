"""monitoring.calibration: the logistic fit against brute force, its uncertainty against the numerical Hessian,
thresholds for a target precision against a known truth, and the thresholds file (JSON, CSV) with its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from avex_hub.monitoring.calibration import (LOGIT_EDGES, NO_SEPARATION, OK, TOO_FEW, UNREACHABLE, Thresholds,
                                             calibrate_label, fit_logistic, logit, score_histogram)
from avex_hub.monitoring.scores import ScoreSource

SOURCE = ScoreSource("a" * 64, "b" * 64, "esp_aves2_sl_beats_all", 10.0, 5.0)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _log_posterior(beta, x, y):
    eta = beta[0] + beta[1] * x
    return float(np.sum(y * eta - np.logaddexp(0, eta)) - 0.005 * np.sum(np.square(beta)))


def test_the_fit_maximises_the_posterior_and_its_covariance_is_the_inverse_hessian():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, 300)
    y = rng.random(300) < _sigmoid(-1.0 + 0.8 * x)
    beta, cov = fit_logistic(x, y)
    best = _log_posterior(beta, x, y)
    for step in ([1e-3, 0], [0, 1e-3], [-1e-3, 0], [0, -1e-3], [7e-4, -7e-4]):
        assert _log_posterior(beta + np.array(step), x, y) < best
    h = 1e-4
    hessian = np.array([[(_log_posterior(beta + h * (np.eye(2)[i] + np.eye(2)[j]), x, y)
                          - _log_posterior(beta + h * (np.eye(2)[i] - np.eye(2)[j]), x, y)
                          - _log_posterior(beta - h * (np.eye(2)[i] - np.eye(2)[j]), x, y)
                          + _log_posterior(beta - h * (np.eye(2)[i] + np.eye(2)[j]), x, y)) / (4 * h * h)
                         for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(np.linalg.inv(-hessian), cov, rtol=1e-3)
    assert abs(beta[0] + 1.0) < 3 * np.sqrt(cov[0, 0]) and abs(beta[1] - 0.8) < 3 * np.sqrt(cov[1, 1])


def test_perfect_separation_stays_finite():
    beta, cov = fit_logistic(np.array([-3.0, -2, -1, 1, 2, 3]), np.array([0, 0, 0, 1, 1, 1]))
    assert np.isfinite(beta).all() and np.isfinite(cov).all() and beta[1] > 1


def _world(n_windows=20000, seed=0, a=-4.0, b=1.2):
    """Scores of every window and the truth: P(correct | s) = sigmoid(a + b logit(s)) exactly."""
    rng = np.random.default_rng(seed)
    scores = _sigmoid(rng.normal(-2.0, 3.0, n_windows))
    truth = rng.random(n_windows) < _sigmoid(a + b * logit(scores))
    return scores, truth


def _stratified(scores, truth, per_bin, seed=1):
    rng = np.random.default_rng(seed)
    bins = np.minimum((scores * 10).astype(int), 9)
    picked = np.concatenate([rng.choice(np.flatnonzero(bins == k), min(per_bin, (bins == k).sum()), replace=False)
                             for k in range(10)])
    return scores[picked], np.where(truth[picked], "yes", "no")


def test_threshold_reaches_the_target_precision_of_the_windows_above_it():
    scores, truth = _world()
    reviewed, verdicts = _stratified(scores, truth, per_bin=30)
    c = calibrate_label("x", reviewed, verdicts, score_histogram(scores), target_precision=0.9)
    assert c.status == OK and c.reviews["yes"] + c.reviews["no"] == len(reviewed)
    measured = truth[scores >= c.threshold].mean()
    assert abs(measured - 0.9) < 0.05, (c.threshold, measured)
    assert c.precision_low <= c.precision <= c.precision_high and c.precision >= 0.9
    # the lower band may not reach the target at all
    assert c.threshold_conservative is None or c.threshold_conservative >= c.threshold
    # the same from the exact truth model: the fitted curve agrees where reviews were taken
    s = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(c.probability(s), _sigmoid(-4.0 + 1.2 * logit(s)), atol=0.12)
    low, high = c.band(s)
    assert (low <= c.probability(s)).all() and (c.probability(s) <= high).all()


def test_no_threshold_when_reviews_are_too_few_one_sided_unseparated_or_short_of_the_target():
    scores, truth = _world(seed=3)
    histogram = score_histogram(scores)
    few = calibrate_label("x", [0.1, 0.9], ["no", "yes"], histogram, target_precision=0.9)
    assert few.status == TOO_FEW and few.threshold is None and "needs at least 20" in few.note
    one_sided = calibrate_label("x", np.linspace(0, 1, 30), ["yes"] * 30, histogram, target_precision=0.9)
    assert one_sided.status == TOO_FEW
    rng = np.random.default_rng(0)
    flat = calibrate_label("x", np.linspace(0.01, 0.99, 60), np.where(np.arange(60) < 30, "yes", "no"),
                           histogram, target_precision=0.9)
    assert flat.status == NO_SEPARATION and flat.slope < 0
    weak_scores = rng.random(80)
    weak = calibrate_label("x", weak_scores, np.where(rng.random(80) < 0.2 + 0.3 * weak_scores, "yes", "no"),
                           histogram, target_precision=0.95)
    assert weak.status == UNREACHABLE and weak.threshold is None and "at most" in weak.note


def test_unsure_and_unreviewed_rows_are_counted_not_fitted():
    scores, truth = _world(seed=4)
    reviewed, verdicts = _stratified(scores, truth, per_bin=10)
    verdicts = verdicts.astype(object)
    verdicts[:3], verdicts[3:5] = "unsure", ""
    c = calibrate_label("x", reviewed, verdicts, score_histogram(scores), target_precision=0.8)
    assert (c.reviews["unsure"], c.reviews["unreviewed"]) == (3, 2)
    assert c.reviews["yes"] + c.reviews["no"] == len(reviewed) - 5


def test_histogram_bins_cover_every_score():
    counts = score_histogram([0.0, 1e-9, 0.5, 1 - 1e-9, 1.0])
    assert sum(counts) == 5 and counts[0] == 2 and counts[-1] == 2 and len(counts) == len(LOGIT_EDGES) - 1


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_thresholds_file_round_trips_and_refuses_another_model(tmp_path, suffix):
    scores, truth = _world(seed=5)
    reviewed, verdicts = _stratified(scores, truth, per_bin=30)
    labels = {"x": calibrate_label("x", reviewed, verdicts, score_histogram(scores), target_precision=0.9),
              "y": calibrate_label("y", [0.5], ["yes"], score_histogram(scores), target_precision=0.9)}
    path = Thresholds(SOURCE, 0.9, labels).save(tmp_path / f"thresholds{suffix}")
    back = Thresholds.load(path)
    assert back.thresholds() == {"x": labels["x"].threshold} and back.labels["y"].status == TOO_FEW
    np.testing.assert_allclose(back.probability("x", [0.2, 0.7]), labels["x"].probability([0.2, 0.7]), rtol=1e-12)
    assert back.probability("y", 0.5) is None
    back.check(SOURCE)
    with pytest.raises(ValueError, match="fitted to scores of another model .*weights_sha256: a+ vs c+") as error:
        back.check(ScoreSource("c" * 64, "b" * 64))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="probe_sha256"):
        back.check(ScoreSource("a" * 64, None))  # the species head's scores, not the probe's
    with pytest.raises(ValueError, match="do not say what made them"):
        back.check(ScoreSource(None))


def test_predict_applies_a_thresholds_file_of_its_own_model_as_classify_does(tiny_model, tmp_path):
    """model.predict(thresholds=...): the file's labels (not the top k) with probability and detected, per window
    the values classify_files writes with the same file, per recording each label's best window; a file fitted to
    another model's scores is refused before any audio is read, and a path is told how to read it."""
    import csv

    import soundfile as sf

    from avex_hub.embed.inference import classify_files
    from avex_hub.monitoring.calibration import LabelCalibration
    from conftest import tones

    names = list(tiny_model.labels)
    path = tmp_path / "clip.wav"
    sf.write(path, tones(25, 16000, seed=7), 16000, subtype="FLOAT")  # three windows of the model's 10 s
    raw = tiny_model.predict(str(path), per_window=True, top_k=len(names))
    scores = np.array([r.score for r in raw if r.label == names[3]])
    threshold = float(np.median(scores))
    fitted = LabelCalibration(names[3], OK, intercept=-1.0, slope=1.5, covariance=[[0.1, 0.0], [0.0, 0.1]],
                              threshold=threshold)
    unfitted = LabelCalibration(names[1], TOO_FEW)
    source = ScoreSource(tiny_model.weights_sha256, None, tiny_model.name, 10.0, 10.0)
    Thresholds(source, 0.9, {names[3]: fitted, names[1]: unfitted}).save(tmp_path / "thresholds.json")
    thresholds = Thresholds.load(tmp_path / "thresholds.json")

    rows = tiny_model.predict(str(path), per_window=True, thresholds=thresholds)
    assert [r.label for r in rows] == [names[3], names[1]] * 3  # the file's labels in every window, its order
    mine = [r for r in rows if r.label == names[3]]
    np.testing.assert_allclose([r.score for r in mine], scores, rtol=1e-6)
    np.testing.assert_allclose([r.probability for r in mine], _sigmoid(-1.0 + 1.5 * logit(scores)), rtol=1e-5)
    assert [r.detected for r in mine] == [bool(s >= threshold) for s in scores] and \
        {True, False} <= {r.detected for r in mine}
    assert {(r.probability, r.detected) for r in rows if r.label == names[1]} == {(None, None)}

    result = classify_files(tiny_model, str(path), species=[names[3], names[1]], num_workers=0, progress=False)
    result.to_csv(tmp_path / "classify.csv", calibration=thresholds)
    with open(tmp_path / "classify.csv", newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["label"], float(r["start_s"])) for r in written] == [(r.label, r.start_s) for r in rows]
    np.testing.assert_allclose([float(r["probability"]) for r in written if r["probability"]],
                               [r.probability for r in mine], atol=2e-6)
    assert [r["detected"] for r in written] == [{True: "1", False: "0", None: ""}[r.detected] for r in rows]

    best = tiny_model.predict(str(path), thresholds=thresholds)  # per label its best window, as without thresholds
    assert [(b.label, b.score) for b in best] == [(names[3], pytest.approx(scores.max(), rel=1e-6)),
                                                  (names[1], pytest.approx(max(r.score for r in rows
                                                                               if r.label == names[1]), rel=1e-6))]
    assert best[0].detected is True and best[0].probability == pytest.approx(
        _sigmoid(-1.0 + 1.5 * logit(scores.max())), rel=1e-5) and best[1].detected is None

    Thresholds(ScoreSource("c" * 64, None, "another"), 0.9, {names[3]: fitted}).save(tmp_path / "other.json")
    with pytest.raises(ValueError, match=r"fitted to scores of another model \(weights_sha256: ccc"):
        tiny_model.predict(str(tmp_path / "missing.wav"), thresholds=Thresholds.load(tmp_path / "other.json"))
    with pytest.raises(TypeError, match=r"Thresholds\.load\(path\)"):
        tiny_model.predict(str(path), thresholds=str(tmp_path / "thresholds.json"))
