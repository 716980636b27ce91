"""Monitoring outputs on a synthetic survey with known calls: event boundaries and calibrated thresholds, measured.

    python benchmarks/monitoring.py [--sites 4 --days 5 --per-day 4 --seeds 0,1,2 --targets 0.7,0.8,0.9]

For each seed: writes a survey (:func:`avex_hub.monitoring.synthetic.make_synthetic_survey`: AudioMoth and Song
Meter files, three species singing bouts of up to 2 s, every bout listed), embeds its 2 s windows (1 s hop) and
those of separate training recordings with the beats-tiny test checkpoint (all layers, mean pooling), trains an MLP
probe (multi-label) on the training windows, and scores every survey window with it. Then:

1. Calibration: ``sample_reviews`` draws ``--per-bin`` windows per score bin and species (10 bins of the score's
   logit, as ``avex-hub review`` does), the verdicts are filled from the truth (a window holds a species when it
   covers at least half of one of its calls), ``calibrate_label`` fits each species and gives the threshold for each
   target precision; the precision measured at that threshold on the held-out windows (every survey window not
   reviewed) is compared with the target. Then ``--draws`` further review draws on the same scores: how often the
   measured precision lands within 0.05 of the target, which separates the review's own variation from one lucky or
   unlucky draw.
2. Events (``find_events``) at each species' calibrated threshold (of the highest target it reaches): for every
   call that an event overlaps, whether the call lies within it and whether the event is at most the call plus one
   window and one hop. Also with an ideal detector (a window scores 1 when it holds at least half of a call, the
   reviewer's truth) for every species, which checks the boundary rule alone.

Prints a Markdown table per part and a JSON line with every number. The tiny checkpoint's encoder is random, so the
probe is weak for some species: thresholds that cannot be reached are reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / "tests" / "fixtures" / "beats-tiny"
WINDOW_S, HOP_S = 2.0, 1.0


def event_checks(table, calls: dict, thresholds: dict[str, float]) -> dict:
    """Per call of a label in ``thresholds`` overlapped by an event of its label: whether it lies within the event,
    and whether the event is at most the call plus one window and one hop."""
    from avex_hub.monitoring.events import find_events

    events = find_events(table, thresholds)
    found = contained = short = 0
    worst = 0.0
    total = sum(label in thresholds for v in calls.values() for label, _, _ in v)
    for file, items in calls.items():
        for label, a, b in items:
            if label not in thresholds:
                continue
            mine = [e for e in events if e.file == file and e.label == label and e.start_s < b and e.end_s > a]
            if not mine:
                continue
            found += 1
            e = mine[0]
            contained += e.start_s <= a + 1e-9 and b <= e.end_s + 1e-9
            short += (e.end_s - e.start_s) <= (b - a) + WINDOW_S + HOP_S + 1e-9
            worst = max(worst, max(0.0, e.start_s - a) + max(0.0, b - e.end_s))
    return {"calls": total, "found": found, "contained": contained, "within_length_bound": short,
            "events": len(events), "largest_part_outside_s": round(worst, 3)}


def ideal_table(table, survey):
    """The same windows scored by an ideal detector: 1 where a window holds the label (the reviewer's truth), else 0."""
    from avex_hub.monitoring.scores import ScoreTable

    scores = survey.window_truth(table.file, table.start_s, table.end_s)
    return ScoreTable(table.file, table.channel, table.start_s, table.end_s, scores, table.labels, table.source)


def _review_and_calibrate(table, truth, targets, seed, per_bin):
    """One review draw (``sample_reviews``, verdicts from the truth) calibrated for each target:
    ``(rows: one dict per species and target, the held-out mask)``."""
    from avex_hub.monitoring.calibration import calibrate_label, score_histogram
    from avex_hub.monitoring.review import sample_reviews

    picks = sample_reviews(table, table.labels, bins=10, per_bin=per_bin, seed=seed)
    held_out = np.ones(len(table), bool)
    held_out[[i for i, _, _ in picks]] = False
    out = []
    for j, label in enumerate(table.labels):
        rows = [i for i, lab, _ in picks if lab == label]
        verdicts = np.where(truth[rows, j] > 0, "yes", "no")
        scores = table.scores[:, j]
        for target in targets:
            c = calibrate_label(label, scores[rows], verdicts, score_histogram(scores), target_precision=target)
            above = held_out & (scores >= c.threshold) if c.threshold is not None else np.zeros(len(table), bool)
            measured = float(truth[above, j].mean()) if above.any() else None
            out.append({"label": label, "target": target, "reviews": len(rows),
                        "yes": int((verdicts == "yes").sum()), "status": c.status, "threshold": c.threshold,
                        "estimated": c.precision, "band": [c.precision_low, c.precision_high],
                        "held_out_windows_above": int(above.sum()), "measured": measured,
                        "within_0.05": None if measured is None else abs(measured - target) <= 0.05,
                        "in_band": None if measured is None else c.precision_low <= measured <= c.precision_high})
    return out


def calibration_checks(table, survey, targets: list[float], seed: int, draws: int,
                       per_bin: int) -> tuple[list[dict], dict, list]:
    """The seeded review draw (its rows, and the thresholds of the highest target each species reaches, for the
    events check), and over ``draws`` further draws of the reviews on the same scores the share of thresholds whose
    measured precision lies within 0.05 of the target (the review's own variation, with the survey fixed)."""
    truth = survey.window_truth(table.file, table.start_s, table.end_s)
    rows = _review_and_calibrate(table, truth, targets, seed, per_bin)
    thresholds = {r["label"]: r["threshold"] for r in rows if r["threshold"] is not None}
    spread = {}
    for draw in range(draws):
        for r in _review_and_calibrate(table, truth, targets, 1000 * (seed + 1) + draw, per_bin):
            entry = spread.setdefault((r["label"], r["target"]), {"draws": 0, "measured": 0, "within": 0, "errors": []})
            entry["draws"] += 1
            if r["measured"] is not None and r["reviews"] >= 50:
                entry["measured"] += 1
                entry["within"] += r["within_0.05"]
                entry["errors"].append(r["measured"] - r["target"])
    summary = [{"seed": seed, "label": k[0], "target": k[1], "draws": v["draws"], "with_threshold": v["measured"],
                "within_0.05": v["within"], "mean_error": float(np.mean(v["errors"])) if v["errors"] else None}
               for k, v in spread.items()]
    return [{"seed": seed, **r} for r in rows], thresholds, summary


def run(seed: int, args, model) -> dict:
    from avex_hub.monitoring.scores import score_with_probe
    from avex_hub.monitoring.synthetic import make_synthetic_survey, train_survey_probe

    work = Path(tempfile.mkdtemp(prefix="avex-monitoring-", dir=args.dir))
    survey = make_synthetic_survey(work / "survey", sites=args.sites, days=args.days,
                                   recordings_per_day=args.per_day, training_recordings=args.training, seed=seed)
    started = time.perf_counter()
    probe = train_survey_probe(model, survey, work / "probe.safetensors", window_s=WINDOW_S, hop_s=HOP_S, seed=seed)
    table = score_with_probe(model, probe, survey.recordings, window_s=WINDOW_S, hop_s=HOP_S)
    calls = {f: v for f, v in survey.call_table().items() if f in set(table.file.tolist())}
    calibration, thresholds, draws = calibration_checks(table, survey, args.targets, seed, args.draws, args.per_bin)
    import shutil

    ideal = ideal_table(table, survey)
    shutil.rmtree(work, ignore_errors=True)
    return {"seed": seed, "windows": len(table), "recordings": len(survey.recordings),
            "scoring_s": round(time.perf_counter() - started, 1), "thresholds": thresholds,
            "events_probe": event_checks(table, calls, thresholds),
            "events_ideal": event_checks(ideal, calls, {label: 0.5 for label in table.labels}),
            "calibration": calibration, "review_draws": draws}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--per-day", type=int, default=4, help="60 s recordings per site and day")
    parser.add_argument("--training", type=int, default=12, help="60 s training recordings for the probe")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--targets", default="0.7,0.8,0.9")
    parser.add_argument("--per-bin", type=int, default=10, help="reviews per logit bin and species (default: 10)")
    parser.add_argument("--draws", type=int, default=20, help="further review draws per survey (default: 20)")
    parser.add_argument("--dir", default=None, help="where the surveys are written (default: a temporary folder)")
    args = parser.parse_args()
    args.targets = [float(t) for t in args.targets.split(",")]
    torch.set_num_threads(1)  # the tiny model's small matrices gain nothing from more threads
    from avex_hub import build_model

    model = build_model("esp_aves2_sl_beats_all", checkpoint=str(TINY))
    results = [run(int(s), args, model) for s in args.seeds.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}, 1 thread")
    print("\n| seed | detector (species) | calls | found by an event | within their event | "
          "event <= call + window + hop | largest part outside (s) |\n|---|---|---|---|---|---|---|")
    for r in results:
        for kind in ("ideal", "probe"):
            e = r[f"events_{kind}"]
            which = "all" if kind == "ideal" else ", ".join(f"{k} >= {v:.3f}" for k, v in r["thresholds"].items())
            print(f"| {r['seed']} | {kind} ({which}) | {e['calls']} | {e['found']} | {e['contained']} | "
                  f"{e['within_length_bound']} | {e['largest_part_outside_s']} |")
    print("\n| seed | species | reviews (yes) | target | threshold | estimated (95%) | held-out windows above | "
          "measured | within 0.05 | in the band |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for c in r["calibration"]:
            if c["threshold"] is None:
                print(f"| {c['seed']} | {c['label']} | {c['reviews']} ({c['yes']}) | {c['target']} | {c['status']} "
                      "| | | | | |")
                continue
            print(f"| {c['seed']} | {c['label']} | {c['reviews']} ({c['yes']}) | {c['target']} | "
                  f"{c['threshold']:.4f} | {c['estimated']:.3f} ({c['band'][0]:.2f}-{c['band'][1]:.2f}) | "
                  f"{c['held_out_windows_above']} | "
                  + ("- | - | - |" if c["measured"] is None else
                     f"{c['measured']:.3f} | {c['within_0.05']} | {c['in_band']} |"))
    checked = [c for r in results for c in r["calibration"] if c["measured"] is not None and c["reviews"] >= 50]
    if checked:
        errors = np.array([c["measured"] - c["target"] for c in checked])
        print(f"\n{len(checked)} (seed, species, target) with a threshold, >= 50 reviews and held-out windows above "
              f"it: within 0.05 of the target {sum(c['within_0.05'] for c in checked)}, measured inside the 95% band "
              f"{sum(c['in_band'] for c in checked)}; error measured - target: mean {errors.mean():+.3f}, "
              f"mean absolute {np.abs(errors).mean():.3f}")
    print(f"\nOver {args.draws} further review draws per survey (same scores; species with >= 50 reviews):\n")
    print("| seed | species | target | draws with a threshold | measured within 0.05 | mean error |\n"
          "|---|---|---|---|---|---|")
    for r in results:
        for d in r["review_draws"]:
            if d["with_threshold"]:
                print(f"| {d['seed']} | {d['label']} | {d['target']} | {d['with_threshold']} of {d['draws']} | "
                      f"{d['within_0.05']} | {d['mean_error']:+.3f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
