"""A benchmark run's results: per data set, aggregated in the card's shape beside the card's numbers, as markdown
and JSON.

Aggregation (ours; the card does not say which sets its aggregates average, nor how): for each seed, the
unweighted mean over the data sets that ran of that seed's score; "ours" is the mean of these over seeds and
"seed spread" their sample standard deviation. A suite with non-animal control sets (BEANS classification) gets
two rows per task, with and without them. A row says how many of the suite's sets it averages: a row short of
sets is not comparable with the card's number, and the table marks it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..embed.outputs import atomic_path, write_failures
from ..hub.card import CARD_RESULTS, PAPER
from .protocol import PRESENT_MAP, ProbeProtocol, spread

__all__ = ["SetResult", "AggregateRow", "BenchmarkReport", "FORMAT"]

FORMAT = "avex-benchmark/1"
# Our metric names -> the card's (and, for the second mAP, what it is).
_CARD_METRIC = {"roc_auc": "ROC AUC", "nmi": "NMI", "accuracy": "accuracy", "mAP": "mAP",
                PRESENT_MAP: "mAP (classes with a positive only)"}


@dataclass
class SetResult:
    """One data set of a run. ``status``: ``ok``, ``planned`` (read, not scored), ``not run`` (not read: see
    ``reason``) or ``failed`` (read, then stopped: see ``reason``). ``scores[(task, metric)]``: one value per seed."""

    suite: str
    name: str
    status: str
    reason: str = ""
    control: bool = False
    multilabel: bool = False
    sizes: dict[str, int] = field(default_factory=dict)
    audio_s: float = 0.0
    scores: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    lr: list[float] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["scores"] = [{"task": t, "metric": m, "per_seed": v} for (t, m), v in self.scores.items()]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SetResult":
        data = dict(data)
        data["scores"] = {(s["task"], s["metric"]): [math.nan if v is None else v for v in s["per_seed"]]
                          for s in data["scores"]}
        data["failures"] = [tuple(f) for f in data["failures"]]
        return cls(**data)


@dataclass(frozen=True)
class AggregateRow:
    """One row of the card-shaped table: ``ours`` and ``spread`` over seeds of the mean over ``used`` sets (of
    ``expected``), the card's ``card`` number (None: the card has none) and ``ours - card``."""

    title: str
    task: str
    metric: str
    card: float | None
    ours: float
    spread: float
    used: tuple[str, ...]
    expected: tuple[str, ...]

    @property
    def difference(self) -> float | None:
        return None if self.card is None or math.isnan(self.ours) else self.ours - self.card

    @property
    def complete(self) -> bool:
        return set(self.expected) <= set(self.used)


def _card(benchmark: str | None, task: str, metric: str) -> float | None:
    """The card's number for a row of ours, None where the card has none (or reports another metric)."""
    return next((r.score for r in CARD_RESULTS if r.benchmark == benchmark and r.task == task
                 and r.metric == _CARD_METRIC.get(metric)), None)


@dataclass
class BenchmarkReport:
    """A run: the model, the suite, where the data was, the protocol, one :class:`SetResult` per set, and for each
    suite run its ``title``, ``card`` key (:data:`avex_hub.hub.card.CARD_RESULTS`; None: no card number), the
    ``sets`` an aggregate comparable with the card needs, its non-animal ``controls`` and what its ``data`` folder
    holds."""

    model_name: str
    suite: str
    data: str
    protocol: ProbeProtocol
    sets: list[SetResult]
    suites: dict[str, dict]
    plan: bool = False
    precision: str = "fp32"
    model_digest: str = ""  # the weights' SHA-256 (or a digest of the parameters): which weights made the numbers
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def ran(self) -> list[SetResult]:
        return [s for s in self.sets if s.status == "ok"]

    @property
    def not_run(self) -> list[SetResult]:
        return [s for s in self.sets if s.status in ("not run", "failed")]

    def aggregates(self) -> list[AggregateRow]:
        """The card-shaped rows (module docstring), suite by suite in run order."""
        rows = []
        for suite_name, info in self.suites.items():
            mine = [s for s in self.sets if s.suite == suite_name]
            expected = tuple(info["sets"])
            keys = list(dict.fromkeys(k for s in mine if s.status == "ok" for k in s.scores))
            variants = [(info["title"], expected)]
            if info["controls"]:
                variants.append((f"{info['title']}, without {', '.join(info['controls'])}",
                                 tuple(n for n in expected if n not in info["controls"])))
            for (task, metric) in keys:
                for title, names in variants:
                    rows.append(self._aggregate(suite_name, info["card"], title, task, metric, names))
        return rows

    def _aggregate(self, suite: str, card: str | None, title: str, task: str, metric: str,
                   names: tuple[str, ...]) -> AggregateRow:
        used = [s for s in self.ran if s.suite == suite and s.name in names and (task, metric) in s.scores
                and np.isfinite(s.scores[(task, metric)]).all()]
        per_seed = np.mean([s.scores[(task, metric)] for s in used], axis=0) if used else np.array([math.nan])
        return AggregateRow(title, task, _CARD_METRIC.get(metric, metric), _card(card, task, metric),
                            float(np.mean(per_seed)), spread(list(per_seed)), tuple(s.name for s in used), names)

    # -- writing ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "model": self.model_name, "suite": self.suite, "data": self.data,
                "protocol": self.protocol.to_dict(), "suites": self.suites, "plan": self.plan,
                "precision": self.precision, "model_digest": self.model_digest, "created": self.created,
                "sets": [s.to_dict() for s in self.sets],
                "aggregates": [asdict(r) | {"difference": r.difference, "complete": r.complete}
                               for r in self.aggregates()]}

    @classmethod
    def from_dict(cls, data: dict) -> "BenchmarkReport":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a benchmark report: format {data.get('format')!r}, expected {FORMAT!r}")
        protocol = data["protocol"] | {k: tuple(v) for k, v in data["protocol"].items()
                                       if k in ("lrs", "seeds") or (k == "layers" and isinstance(v, list))}
        return cls(data["model"], data["suite"], data["data"], ProbeProtocol(**protocol),
                   [SetResult.from_dict(s) for s in data["sets"]], data["suites"], data["plan"], data["precision"],
                   data["model_digest"], data["created"])

    def to_markdown(self) -> str:
        """The report for people: headline, the card-shaped table, one row per set, what did not run, the protocol."""
        lines = [f"# Benchmark {self.suite}: {self.model_name}", "",
                 f"{self.created}; data `{self.data}`; {self.model_name} (weights `{self.model_digest}`) at "
                 f"{self.precision}; the card's paper: {PAPER.citation()}, {PAPER.url}.", ""]
        if self.plan:
            lines += ["Plan only: every set was read; nothing was embedded or scored.", "", *_plan_table(self)]
        elif not self.ran:
            lines += ["**No data set could be read, so this run has no number of ours.** The reasons are listed "
                      "under 'Not run'; the data folder of each suite holds:", ""]
            lines += [f"- {name}: {info['data']}" for name, info in self.suites.items()]
        else:
            lines += ["## The card's table, ours beside it", "", *_card_table(self.aggregates()), "",
                      "## Per data set", "", *_set_table(self.ran)]
        if self.not_run:
            lines += ["", "## Not run", ""] + [f"- {s.suite}/{s.name} ({s.status}): {s.reason}" for s in self.not_run]
        skipped = sum(len(s.failures) for s in self.sets)
        if skipped:
            lines += ["", f"{skipped} listed files were skipped (missing or unreadable); each is named in the "
                      "failures file beside this report."]
        return "\n".join(lines + ["", "## Protocol", "", *_protocol_lines(self.protocol)])

    def write(self, out: str | os.PathLike) -> Path:
        """``out`` (markdown), ``out`` with ``.json`` and, when files were skipped, ``.failures.csv``; each written
        atomically. Returns ``out``."""
        out = Path(out)
        with atomic_path(out, out.suffix) as tmp:
            tmp.write_text(self.to_markdown() + "\n", encoding="utf-8")
        with atomic_path(out.with_suffix(".json"), ".json") as tmp:  # strict JSON: an undefined score is null
            tmp.write_text(json.dumps(_strict(self.to_dict()), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        failures = {f"{path}": f"{s.suite}/{s.name}: {reason}" for s in self.sets for path, reason in s.failures}
        target = out.with_suffix(".failures.csv")
        if failures:
            write_failures(target, failures)
        else:
            target.unlink(missing_ok=True)
        return out


def _strict(value):
    """``value`` with every nan or infinite float replaced by None (JSON has no nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _card_table(rows: list[AggregateRow]) -> list[str]:
    out = ["| benchmark | task | metric | card | ours | ours - card | seed spread | sets |", "|---" * 8 + "|"]
    for r in rows:
        sets = f"{len(r.used)} of {len(r.expected)}" + ("" if r.complete else " (not comparable with the card)")
        out.append(f"| {r.title} | {r.task} | {r.metric} | {_number(r.card)} | {_number(r.ours)} | "
                   f"{_number(r.difference, signed=True)} | {_number(r.spread)} | {sets} |")
    return out


def _set_table(results: list[SetResult]) -> list[str]:
    header = ("suite", "set", "task", "metric", "ours", "seed spread", "per seed", "learning rate",
              "train / val / test", "notes")
    out = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for s in results:
        sizes = " / ".join(str(s.sizes.get(role, "-")) for role in ("train", "val", "test"))
        lrs = ", ".join(f"{lr:g}" for lr in s.lr) or "-"
        notes = "; ".join(s.notes + ([f"{len(s.failures)} files skipped"] if s.failures else [])) or ""
        for (task, metric), values in s.scores.items():
            out.append(f"| {s.suite} | {s.name} | {task} | {_CARD_METRIC.get(metric, metric)} | "
                       f"{_number(float(np.mean(values)))} | {_number(spread(values))} | "
                       f"{', '.join(_number(v) for v in values)} | {lrs if task == 'probe' else '-'} | {sizes} | "
                       f"{notes.replace('|', '/')} |")
    return out


def _plan_table(report: BenchmarkReport) -> list[str]:
    out = ["| suite | set | status | train / val / test | audio to embed (h) | notes |", "|---" * 6 + "|"]
    for s in report.sets:
        sizes = " / ".join(str(s.sizes.get(role, "-")) for role in ("train", "val", "test"))
        out.append(f"| {s.suite} | {s.name} | {s.status} | {sizes} | {s.audio_s / 3600:.2f} | "
                   f"{'; '.join(s.notes).replace('|', '/')} |")
    return out


def _protocol_lines(p: ProbeProtocol) -> list[str]:
    return [
        f"- Embeddings: layers {p.layers!r}, frames {p.pooling}-pooled, extracted once from the frozen encoder and "
        "cached (offline). The card's probes trained online on the frozen encoder; offline training on cached "
        "embeddings is the same only without augmentation, and this run uses none.",
        f"- Probe: linear, no class weights, AdamW (weight decay {p.weight_decay:g}), batch {p.batch_size}, up to "
        f"{p.epochs} epochs, the best validation epoch kept, early stopping after {p.patience} epochs without "
        "improvement (ours: the paper does not publish its epochs or learning-rate selection).",
        f"- Learning rate: the best on the validation split of {', '.join(f'{lr:g}' for lr in p.lrs)} (ours), by "
        "the metric reported.",
        f"- Seeds: {', '.join(map(str, p.seeds))} (ours); 'ours' is the mean over seeds, 'seed spread' their sample "
        "standard deviation.",
        "- Metrics: probe accuracy (one label per clip) or mAP as BEANS computes it (every class, a class without "
        "a positive in test counting 0); retrieval ROC AUC and clustering NMI on the test embeddings.",
        "- Aggregate: per seed, the unweighted mean over the sets that ran; which sets the card's aggregates "
        "average is not published, so rows with and without the non-animal controls are both shown.",
        f"- A set without a validation split gets {p.val_fraction:.0%} of train held out with seed {p.split_seed} "
        "(noted per set).",
    ]
