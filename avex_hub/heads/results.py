"""Reporting scores: one :class:`MetricResult` per score, a :class:`ResultsTable` of them (markdown, records, pandas,
two-table comparison) and a side-by-side :class:`Comparison`. Import them from :mod:`avex_hub.heads.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

__all__ = ["MetricResult", "ResultsTable", "Comparison"]


@dataclass(frozen=True)
class MetricResult:
    """One score: ``task`` (e.g. a benchmark task), ``metric`` name, and optional model / layer / dataset."""

    task: str
    metric: str
    score: float
    model: str | None = None
    layer: str | int | None = None
    dataset: str | None = None


_COLUMNS = ("task", "dataset", "metric", "model", "layer")


def _cell(v, digits: int) -> str:
    if v is None:
        return ""
    text = f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(header: Sequence[str], rows: Sequence[Sequence], digits: int) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Comparison:
    """Side-by-side scores of two tables (from ``ResultsTable.compare``); ``delta`` = second - first."""

    columns: tuple[str, ...]
    rows: list[tuple]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def to_markdown(self, digits: int = 4) -> str:
        return _markdown(self.columns, self.rows, digits)

    __str__ = to_markdown


class ResultsTable:
    """An ordered list of ``MetricResult`` rows with markdown / dict export and two-table comparison."""

    def __init__(self, rows: Iterable[MetricResult | dict] = ()) -> None:
        self.rows: list[MetricResult] = [r if isinstance(r, MetricResult) else MetricResult(**r) for r in rows]

    def add(self, task: str, metric: str, score: float, *, model: str | None = None,
            layer: str | int | None = None, dataset: str | None = None) -> MetricResult:
        row = MetricResult(task, metric, float(score), model, layer, dataset)
        self.rows.append(row)
        return row

    @classmethod
    def concat(cls, *tables: ResultsTable | Iterable[MetricResult]) -> ResultsTable:
        return cls(row for table in tables for row in table)

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> ResultsTable:  # the inverse of records()
        return cls(records)

    @classmethod
    def from_dict(cls, data: dict) -> ResultsTable:  # the inverse of to_dict()
        return cls(data["rows"])

    def records(self) -> list[dict]:
        return [asdict(row) for row in self.rows]

    def to_dict(self) -> dict:
        return {"rows": self.records()}

    def to_pandas(self):
        import pandas as pd  # optional dependency

        return pd.DataFrame(self.records(), columns=[f.name for f in fields(MetricResult)])

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __eq__(self, other) -> bool:
        return isinstance(other, ResultsTable) and self.rows == other.rows

    def to_markdown(self, digits: int = 4) -> str:
        """Markdown table; columns that are empty in every row (e.g. no ``layer``) are left out."""
        used = [c for c in _COLUMNS if c in ("task", "metric") or any(getattr(r, c) is not None for r in self.rows)]
        return _markdown([*used, "score"], [[*(getattr(r, c) for c in used), r.score] for r in self.rows], digits)

    __str__ = to_markdown

    def compare(self, other: ResultsTable, names: tuple[str, str] = ("a", "b"),
                on: Sequence[str] = ("task", "dataset", "metric", "layer")) -> Comparison:
        """Align rows of ``self`` and ``other`` on the fields ``on``: one row per key, in first-seen order,
        with both scores (None where a side lacks the key) and their difference."""
        if len(names) != 2 or names[0] == names[1]:
            raise ValueError(f"names: expected two distinct column names, found {names!r}")
        if not set(on) <= set(_COLUMNS):
            raise ValueError(f"on: expected fields from {_COLUMNS}, found {tuple(on)}")
        sides: list[dict[tuple, float]] = []
        for table, name in ((self, names[0]), (other, names[1])):
            scores = {}
            for row in table:
                key = tuple(getattr(row, c) for c in on)
                if key in scores:
                    raise ValueError(f"table {name!r} has two rows for {dict(zip(on, key))}; "
                                     "add a distinguishing field (e.g. 'model') to `on`")
                scores[key] = row.score
            sides.append(scores)
        pairs = [(key, sides[0].get(key), sides[1].get(key)) for key in dict.fromkeys([*sides[0], *sides[1]])]
        return Comparison((*on, *names, "delta"), [(*key, a, b, None if a is None or b is None else b - a)
                                                    for key, a, b in pairs])
