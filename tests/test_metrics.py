"""avex_hub.heads.metrics against independent brute-force computations (explicit loops / pair counting / sklearn)."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from avex_hub.heads import metrics as M

SEEDS = [0, 1, 2, 3]


# ---------------------------------------------------------------- brute-force references (plain loops)

def brute_similarity(e: np.ndarray) -> np.ndarray:
    """Row-wise cosine ordering; a zero-norm row has similarity 0 to everything (the documented rule).

    Integer-valued embeddings get an exact key instead of the rounded cosine: within row i,
    cos(i, j) = d_ij / (|e_i| |e_j|) orders like sign(d_ij) d_ij^2 / |e_j|^2, a ratio of small integers
    whose float64 quotient is equal exactly when the cosines are equal. Otherwise float64 cosine.
    """
    e = np.asarray(e, dtype=np.float64)
    sq = (e * e).sum(axis=1)
    dots = e @ e.T
    if np.array_equal(e, np.round(e)):
        return np.sign(dots) * dots * dots / np.where(sq == 0, 1.0, sq)[None, :]
    norms = np.where(sq == 0, 1.0, np.sqrt(sq))
    return dots / np.outer(norms, norms)


def brute_retrieval(e, labels, eps: float = 0.0):
    """Per query, by explicit (positive, negative) pair counting and a scan for the nearest other item.

    With ``eps = 0`` the AUC is exact: (#pos > neg + 1/2 #pos == neg) / (P N). With ``eps > 0`` (float32
    input against this float64 reference) pairs closer than eps may go either way, so the AUC is returned
    as bounds [low, high], and "nearest" is the set of items within eps of the maximum.
    """
    s = brute_similarity(e)
    labels = np.asarray(labels)
    n = len(s)
    share = (lambda i, j: bool(np.any(labels[i] & labels[j]))) if labels.ndim == 2 else (
        lambda i, j: labels[i] == labels[j])
    low, high, nearest, num_pos = [], [], [], []
    for i in range(n):
        pos = [s[i, j] for j in range(n) if j != i and share(i, j)]
        neg = [s[i, j] for j in range(n) if j != i and not share(i, j)]
        if pos and neg:
            diff = np.array(pos)[:, None] - np.array(neg)[None, :]
            sure, unsure = (diff > eps).sum(), (np.abs(diff) <= eps).sum()
            half = 0.5 * unsure if eps == 0 else 0.0
            low.append((sure + half) / diff.size)
            high.append((sure + (half if eps == 0 else unsure)) / diff.size)
        else:
            low.append(math.nan)
            high.append(math.nan)
        best = -math.inf
        for j in range(n):
            if j != i and s[i, j] > best:  # strictly greater: the lowest index wins ties
                best, candidates = s[i, j], [j]
            elif j != i and eps > 0 and s[i, j] >= best - eps:
                candidates.append(j)
        nearest.append(candidates if eps > 0 else candidates[0])
        num_pos.append(len(pos))
    return np.array(low), np.array(high), nearest, np.array(num_pos), share


def brute_ap(y, s) -> float:
    """AP = sum over distinct thresholds t (high to low) of (R(t) - R(previous t)) * P(t)."""
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        selected = s >= t
        tp = np.sum(y[selected])
        recall = tp / np.sum(y)
        ap += (recall - prev_recall) * tp / np.sum(selected)
        prev_recall = recall
    return ap


def brute_nmi(a, b) -> float:
    n = len(a)
    pa = {x: np.mean(a == x) for x in set(a.tolist())}
    pb = {x: np.mean(b == x) for x in set(b.tolist())}
    mi = 0.0
    for x in pa:
        for z in pb:
            pxz = np.sum((a == x) & (b == z)) / n
            if pxz > 0:
                mi += pxz * math.log(pxz / (pa[x] * pb[z]))
    ha = -sum(p * math.log(p) for p in pa.values())
    hb = -sum(p * math.log(p) for p in pb.values())
    return 1.0 if ha == hb == 0 else mi / ((ha + hb) / 2)


def gaussian(seed, n=300, d=8, classes=10):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, classes, n)


def quantised(seed, n=200, d=6, classes=6):
    """Entries in {-1, 0, 1} with duplicated rows: many exact ties, all exactly representable."""
    rng = np.random.default_rng(seed)
    e = rng.integers(-1, 2, size=(n, d)).astype(np.float32)
    e[rng.integers(0, n, 40)] = e[rng.integers(0, n, 40)]
    e[np.linalg.norm(e, axis=1) == 0, 0] = 1.0  # zero rows are tested on their own
    return e, rng.integers(0, classes, n)


# ---------------------------------------------------------------- classification metrics

@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_macro_f1_match_sklearn(seed):
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, 250)
    scores = rng.integers(0, 3, size=(250, 7)).astype(float)  # integer scores: many argmax ties
    pred = np.array([int(np.flatnonzero(row == row.max())[0]) for row in scores])  # first maximum
    pred_sparse = rng.choice([0, 2, 9], 250)  # class 9 never a label, classes 1,3.. never predicted
    assert M.accuracy(y, scores) == accuracy_score(y, pred)
    assert M.accuracy(torch.as_tensor(y), torch.as_tensor(scores, dtype=torch.bfloat16)) == accuracy_score(y, pred)
    assert M.macro_f1(y, scores) == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert M.macro_f1(y, pred_sparse) == pytest.approx(
        f1_score(y, pred_sparse, average="macro", zero_division=0), abs=1e-12)
    assert M.macro_f1(y, pred_sparse, num_classes=12) == pytest.approx(
        f1_score(y, pred_sparse, labels=range(12), average="macro", zero_division=0), abs=1e-12)
    names = np.array(["a", "b", "c"])[y % 3]
    assert M.macro_f1(names, names[::-1]) == pytest.approx(f1_score(names, names[::-1], average="macro"))


def test_classification_validation():
    with pytest.raises(ValueError, match="length of labels"):
        M.accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="multi-hot"):
        M.macro_f1(np.zeros((3, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="0..2"):
        M.macro_f1([0, 1, 3], [0, 1, 1], num_classes=3)
    with pytest.raises(ValueError, match="NaN"):
        M.accuracy([0, 1], [[0.1, np.nan], [0.2, 0.3]])
    with pytest.raises(ValueError, match="empty"):
        M.accuracy([], [])


@pytest.mark.parametrize("seed", SEEDS)
def test_map_matches_sklearn_and_loop(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    n, c = 300, 9
    targets = (rng.random((n, c)) < 0.15).astype(int)
    targets[:, 4] = 0  # a class without positives: skipped
    scores = np.round(rng.random((n, c)) + 0.3 * targets, 1)  # quantised: tied scores
    kept = [k for k in range(c) if targets[:, k].any()]
    sk = np.mean([average_precision_score(targets[:, k], scores[:, k]) for k in kept])
    loop = np.mean([brute_ap(targets[:, k], scores[:, k]) for k in kept])
    assert sk == pytest.approx(loop, abs=1e-12)
    assert M.mean_average_precision(targets, scores) == pytest.approx(sk, abs=1e-12)
    assert M.mean_average_precision(torch.as_tensor(targets).bool(), torch.as_tensor(scores)) == pytest.approx(sk)
    ids = rng.integers(0, c, n)  # single-label targets are one-hot encoded
    one_hot = np.eye(c, dtype=int)[ids]
    expected = np.mean([brute_ap(one_hot[:, k], scores[:, k]) for k in np.unique(ids)])
    assert M.mean_average_precision(ids, scores) == pytest.approx(expected, abs=1e-12)


def test_map_edge_cases():
    with pytest.warns(RuntimeWarning, match="no class has a positive"):
        assert math.isnan(M.mean_average_precision(np.zeros((4, 2)), np.ones((4, 2))))
    with pytest.raises(ValueError, match="expected shape"):
        M.mean_average_precision(np.zeros((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="only 0/1"):
        M.mean_average_precision(np.full((4, 2), 2), np.ones((4, 2)))
    with pytest.raises(ValueError, match="integers in 0..1"):
        M.mean_average_precision([0, 1, 2, 0], np.ones((4, 2)))
    assert M.mean_average_precision([[1], [0]], [[0.5], [0.5]]) == 0.5  # one tie group: precision 1/2


# ---------------------------------------------------------------- retrieval

def check_against_brute(e, labels, per_query, exact: bool):
    low, high, nearest, num_pos, share = brute_retrieval(e, labels, eps=0.0 if exact else 1e-5)
    auc = per_query["roc_auc"]
    assert np.array_equal(np.isnan(auc), np.isnan(low))
    valid = ~np.isnan(low)
    assert np.array_equal(per_query["num_positives"], num_pos)
    if exact:
        assert np.array_equal(auc[valid], low[valid])
        assert per_query["nearest"].tolist() == nearest
    else:
        assert np.all((low[valid] <= auc[valid] + 1e-12) & (auc[valid] <= high[valid] + 1e-12))
        assert all(j in near for j, near in zip(per_query["nearest"], nearest))
        assert np.mean(high[valid] - low[valid]) < 1e-4  # the float32 ambiguity is tiny
    hits = np.array([share(i, j) for i, j in enumerate(per_query["nearest"])])
    assert np.array_equal(per_query["hit"], hits)
    summary = M.retrieval_metrics(e, labels, batch_size=64)
    assert np.nanmean(low) - 1e-12 <= summary["roc_auc"] <= np.nanmean(high) + 1e-12
    assert summary["num_queries"] == int(valid.sum())
    assert summary["num_queries_precision_at_1"] == int(np.sum(num_pos > 0))
    assert summary["precision_at_1"] == pytest.approx(np.mean(hits[num_pos > 0]), abs=1e-12)
    return summary


@pytest.mark.parametrize("seed", SEEDS)
def test_retrieval_random_matches_brute_force(seed):
    e, y = gaussian(seed)
    check_against_brute(e, y, M.retrieval_per_query(e, y, batch_size=50), exact=False)
    low, high, *_ = brute_retrieval(e, y)  # eps = 0: plain float64 pair counting
    exact64 = M.retrieval_per_query(e.astype(np.float64), y, dtype=torch.float64)["roc_auc"]
    np.testing.assert_allclose(exact64, low, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_retrieval_exact_with_ties(seed):
    e, y = quantised(seed)
    s = check_against_brute(e, y, M.retrieval_per_query(e, y, batch_size=33), exact=True)
    # One dominant class: blocks of its items rank the (fewer) negatives instead of the positives.
    skewed = np.r_[np.zeros(170, int), np.arange(30) % 3 + 1]
    check_against_brute(e, skewed, M.retrieval_per_query(e, skewed, batch_size=8), exact=True)
    assert s["roc_auc"] == M.retrieval_roc_auc(e, y) and s["precision_at_1"] == M.retrieval_precision_at_1(e, y)
    # Exactly equal embeddings: for a row of duplicates, the nearest item is the lowest-index other copy.
    dup = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
    q = M.retrieval_per_query(dup, np.arange(12) % 2)
    assert q["nearest"].tolist() == [1, 0, 0, 0, 5, 4, 4, 4, 9, 8, 8, 8]


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_retrieval_multilabel_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    e = rng.integers(-2, 3, size=(150, 5)).astype(np.float32)
    e[np.linalg.norm(e, axis=1) == 0, 0] = 1.0
    y = (rng.random((150, 6)) < 0.2).astype(np.int64)
    y[:, 2] = 0  # an unused class
    y[:5] = 0  # items without any label: match nothing, still candidates
    check_against_brute(e, y, M.retrieval_per_query(e, y, batch_size=40), exact=True)


@pytest.mark.parametrize("data", [gaussian, quantised])
def test_retrieval_batching_and_query_subsets_are_invariant(data):
    e, y = data(5)
    small, big = M.retrieval_per_query(e, y, batch_size=7), M.retrieval_per_query(e, y, batch_size=10_000)
    for key in small:
        assert np.array_equal(small[key], big[key], equal_nan=key == "roc_auc"), key
    summary = M.retrieval_metrics(e, y, batch_size=7)
    assert summary == M.retrieval_metrics(torch.as_tensor(e), torch.as_tensor(y), batch_size=10_000, device="cpu")
    subset = [17, 3, 3, 150]
    part = M.retrieval_per_query(e, y, queries=subset, batch_size=3)
    for key in ("roc_auc", "nearest", "hit", "num_positives"):
        assert np.array_equal(part[key], big[key][subset], equal_nan=key == "roc_auc"), key


def test_retrieval_singleton_and_degenerate_label_sets():
    e, y = gaussian(7, n=60)
    y[11] = 99  # a class with one item: skipped as a query, still a candidate for everyone else
    q = M.retrieval_per_query(e, y)
    assert math.isnan(q["roc_auc"][11]) and q["num_positives"][11] == 0
    assert M.retrieval_metrics(e, y)["num_queries"] == 59
    check_against_brute(e, y, q, exact=False)
    with pytest.warns(RuntimeWarning, match="no query has both"):
        one_class = M.retrieval_metrics(e, np.zeros(60, int))
    assert math.isnan(one_class["roc_auc"]) and one_class["precision_at_1"] == 1.0
    assert one_class["num_queries"] == 0
    with pytest.warns(RuntimeWarning) as caught:
        singles = M.retrieval_metrics(e, np.arange(60))
    assert math.isnan(singles["precision_at_1"]) and math.isnan(singles["roc_auc"])
    assert "no query has a positive" in str(caught[-1].message) and caught[-1].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the single-metric helpers warn only about their own metric
        assert M.retrieval_roc_auc(e, np.arange(60) % 2) > 0.3
        assert M.retrieval_precision_at_1(e, np.zeros(60, int)) == 1.0
    with pytest.warns(RuntimeWarning, match="no query has both"):
        two = M.retrieval_metrics([[1.0, 0.0], [0.0, 1.0]], [0, 0])  # smallest valid input
    assert two["precision_at_1"] == 1.0 and two["num_queries"] == 0


@pytest.mark.filterwarnings("ignore:2 embedding rows are all zero")
def test_zero_norm_rows_have_zero_similarity():
    e, y = quantised(3, n=80)
    e[[4, 9]] = 0.0
    with pytest.warns(RuntimeWarning, match="2 embedding rows are all zero") as caught:
        q = M.retrieval_per_query(e, y)
    assert caught[0].filename == __file__  # attributed to the caller
    check_against_brute(e, y, q, exact=True)
    assert q["roc_auc"][4] == 0.5 or math.isnan(q["roc_auc"][4])  # all similarities tie at 0


def test_retrieval_validation():
    e = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="n = 5"):
        M.retrieval_metrics(e, [0, 1, 0])
    with pytest.raises(ValueError, match="at least 2 items"):
        M.retrieval_metrics(e[:1], [0])
    with pytest.raises(ValueError, match="at least 2 items"):
        M.retrieval_metrics(np.ones((5, 3, 2)), [0] * 5)
    bad = e.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf .* rows \[3\]"):
        M.retrieval_metrics(bad, [0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match="only 0/1"):
        M.retrieval_metrics(e, np.full((5, 2), 3))
    with pytest.raises(ValueError, match="batch_size"):
        M.retrieval_metrics(e, [0, 1, 0, 1, 0], batch_size=0)
    with pytest.raises(ValueError, match="queries"):
        M.retrieval_per_query(e, [0, 1, 0, 1, 0], queries=[5])
    with pytest.raises(ValueError, match="rescale"):
        M.retrieval_metrics(e * 1e30, [0, 1, 0, 1, 0])


def test_retrieval_moderately_large():
    """n = 20k, d = 64 in blocks of 2048: the full pass, and per-query AUCs checked on a sample."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(200, 64, generator=gen)
    y = torch.randint(0, 200, (20_000,), generator=gen)
    e = centers[y] + 2.0 * torch.randn(20_000, 64, generator=gen)
    q = M.retrieval_per_query(e, y, batch_size=2048)
    assert np.isfinite(q["roc_auc"]).all() and 0.6 < q["roc_auc"].mean() < 1.0
    sample = np.random.default_rng(0).choice(20_000, 8, replace=False)
    s = (e[sample].double() @ e.double().T) / torch.outer(e[sample].double().norm(dim=1), e.double().norm(dim=1))
    for row, i in enumerate(sample):
        others = torch.arange(20_000) != i
        pos, neg = s[row][others & (y == y[i])], s[row][others & (y != y[i])]
        greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        assert q["roc_auc"][i] == pytest.approx(float(greater) / (len(pos) * len(neg)), abs=1e-6)
        assert q["nearest"][i] == int(torch.where(others, s[row], -math.inf).argmax())


# ---------------------------------------------------------------- clustering

def test_clustering_nmi():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 120)
    e = rng.normal(size=(120, 5)) + 1.5 * np.eye(5)[y]
    clusters = KMeans(n_clusters=4, random_state=3, n_init=10).fit_predict(e)
    assert M.clustering_nmi(e, y, seed=3) == pytest.approx(brute_nmi(y, clusters), abs=1e-12)
    separated = np.eye(3)[np.arange(30) % 3] * 100 + rng.normal(size=(30, 3))
    assert M.clustering_nmi(torch.as_tensor(separated), np.array(list("abc") * 10)) == pytest.approx(1.0)
    assert M.clustering_nmi(e, y, seed=3, normalize=True) == pytest.approx(
        brute_nmi(y, KMeans(4, random_state=3, n_init=10).fit_predict(e / np.linalg.norm(e, axis=1)[:, None])))
    with pytest.raises(ValueError, match="at least 2 items"):
        M.clustering_nmi(e[:1], y[:1])
    with pytest.raises(ValueError, match=r"shape \[120\]"):
        M.clustering_nmi(e, y[:5])


# ---------------------------------------------------------------- results table

def test_results_table_round_trip_and_compare():
    a = M.ResultsTable()
    a.add("beans-cls", "accuracy", 0.81234, model="sl-beats-all", dataset="watkins")
    a.add("beans-det", "map", 0.5, model="sl-beats-all", dataset="dcase")
    b = M.ResultsTable([M.MetricResult("beans-det", "map", 0.625, model="naturelm", dataset="dcase"),
                        {"task": "retrieval", "metric": "roc_auc", "score": 0.7, "model": "naturelm"}])
    md = a.to_markdown()
    assert md.splitlines()[0] == "| task | dataset | metric | model | score |"
    assert "| beans-cls | watkins | accuracy | sl-beats-all | 0.8123 |" in md and str(a) == md
    assert M.ResultsTable.from_dict(a.to_dict()) == a and M.ResultsTable.from_records(b.records()) == b
    both = M.ResultsTable.concat(a, b)
    assert len(both) == 4 and [r.score for r in both] == [0.81234, 0.5, 0.625, 0.7]
    cmp = a.compare(b, names=("sl", "nlm"))
    assert cmp.columns == ("task", "dataset", "metric", "layer", "sl", "nlm", "delta")
    rec = {(r["task"], r["metric"]): r for r in cmp.records()}
    assert rec[("beans-det", "map")]["delta"] == pytest.approx(0.125)
    assert rec[("beans-cls", "accuracy")]["nlm"] is None and rec[("retrieval", "roc_auc")]["sl"] is None
    assert "| beans-det | dcase | map |  | 0.5000 | 0.6250 | 0.1250 |" in cmp.to_markdown()
    with pytest.raises(ValueError, match="add a distinguishing field"):
        both.compare(a)
    assert len(both.compare(a, on=("task", "dataset", "metric", "model")).rows) == 4
    with pytest.raises(ValueError, match="distinct"):
        a.compare(b, names=("x", "x"))
    pipe = M.ResultsTable([M.MetricResult("a|b", "m", 1.0)]).to_markdown()
    assert "a\\|b" in pipe
    if importlib.util.find_spec("pandas") is not None:
        assert list(both.to_pandas()["score"]) == [0.81234, 0.5, 0.625, 0.7]


def test_import_has_no_side_effects():
    """In a fresh interpreter: importing the module changes no global state and does not load scikit-learn."""
    import subprocess
    import sys

    code = (
        "import sys, warnings, numpy as np, torch, avex_hub\n"
        "state = lambda: (torch.get_default_dtype(), torch.get_num_threads(), torch.initial_seed(), "
        "len(warnings.filters), np.geterr(), np.random.get_state()[1][:4].tolist(), torch.is_grad_enabled())\n"
        "before = state()\n"
        "import avex_hub.heads.metrics\n"
        "assert state() == before, (before, state())\n"
        "assert 'sklearn' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_precision_at_1_without_positives_says_why_for_multi_label_data():
    # Issue 27: multi-label data with no shared label was said to have "every label occurs once".
    e = np.random.default_rng(0).normal(size=(6, 4))
    hot = np.zeros((6, 5))
    hot[[0, 1, 2], [0, 1, 2]] = 1  # three items with one label each, three with none: no query has a positive
    with pytest.warns(RuntimeWarning, match=r"no query has a positive \(no two items share a label\)") as caught:
        assert math.isnan(M.retrieval_precision_at_1(e, hot))
    assert "occurs once" not in str(caught[-1].message)
    with pytest.warns(RuntimeWarning, match=r"no query has a positive \(every label occurs once\)"):
        M.retrieval_precision_at_1(e, np.arange(6))
