"""The published model card's results and paper, as data: the one home of these numbers in the package.

Every place that shows the card's numbers (the benchmark runner's tables, the evaluation tutorial, README) reads
them from here; nothing else types them again. Source: the model card of
``EarthSpeciesProject/esp-aves2-sl-beats-all`` on the Hugging Face Hub and the paper below. The card gives one
aggregate score per benchmark and task; it does not publish which data sets each aggregate averages, nor the
probes' epochs or learning-rate selection.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CardResult", "CARD_MODEL", "CARD_RESULTS", "PAPER", "card_result"]

CARD_MODEL = "esp_aves2_sl_beats_all"  # the entry point whose card this is


@dataclass(frozen=True)
class Paper:
    """The paper the card cites."""

    title: str
    authors: str
    venue: str
    arxiv: str
    bibtex_key: str

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"

    def citation(self) -> str:
        return f"{self.authors}, {self.title}, {self.venue} (arXiv {self.arxiv})"


PAPER = Paper(
    title="What Matters for Bioacoustic Encoding",
    authors="Miron, Robinson, Alizadeh et al.",
    venue="ICLR 2026",
    arxiv="2508.11845",
    bibtex_key="miron2025matters",
)


@dataclass(frozen=True)
class CardResult:
    """One row of the card's results table: linear probing on the frozen encoder, aggregated per benchmark."""

    benchmark: str  # a short key: "beans_classification", "beans_detection", "birdset", "individual_id", ...
    title: str  # the benchmark as the card names it
    task: str  # "probe", "retrieval" or "clustering"
    metric: str  # "accuracy", "mAP", "ROC AUC" or "NMI"
    score: float


CARD_RESULTS: tuple[CardResult, ...] = (
    CardResult("beans_classification", "BEANS classification", "probe", "accuracy", 0.832),
    CardResult("beans_classification", "BEANS classification", "retrieval", "ROC AUC", 0.813),
    CardResult("beans_classification", "BEANS classification", "clustering", "NMI", 0.604),
    CardResult("beans_detection", "BEANS detection", "probe", "mAP", 0.408),
    CardResult("beans_detection", "BEANS detection", "retrieval", "ROC AUC", 0.726),
    CardResult("birdset", "BirdSet (dedicated train setup)", "probe", "mAP", 0.294),
    CardResult("birdset", "BirdSet", "retrieval", "ROC AUC", 0.732),
    CardResult("individual_id", "Individual ID (Pipit, Chiffchaff, Little Owl, Macaques)", "probe", "accuracy", 0.511),
    CardResult("individual_id", "Individual ID", "retrieval", "ROC AUC", 0.690),
    CardResult("vocal_repertoire", "Vocal repertoire (Zebra Finch, Giant Otters, Bengalese Finch, Killer Whale)",
               "retrieval", "ROC AUC", 0.798),
    CardResult("vocal_repertoire", "Vocal repertoire", "clustering", "NMI", 0.529),
)


def card_result(benchmark: str, task: str) -> CardResult:
    """The card's row for ``benchmark`` and ``task``; a KeyError listing the rows there are otherwise."""
    for row in CARD_RESULTS:
        if row.benchmark == benchmark and row.task == task:
            return row
    known = ", ".join(f"{r.benchmark}/{r.task}" for r in CARD_RESULTS)
    raise KeyError(f"the model card has no {benchmark}/{task} result; it has: {known}")
