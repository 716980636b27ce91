"""The card's published numbers have one home (avex_hub.hub.card) and it agrees with the card's facts file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from avex_hub.hub import card

FACTS = Path(__file__).resolve().parents[1].parent / "shared" / "design" / "MODEL_CARD_FACTS.md"


def _facts_rows() -> list[tuple[str, str, str, float]]:
    """(benchmark, task, metric, score) of every row of the facts file's results table."""
    text = FACTS.read_text(encoding="utf-8")
    table = text.split("## Published results", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"0\.\d+", cells[3]):
            rows.append((cells[0], cells[1], cells[2], float(cells[3])))
    return rows


@pytest.mark.skipif(not FACTS.exists(), reason=f"the card's facts file is not beside this checkout ({FACTS})")
def test_card_results_equal_the_facts_file_row_for_row():
    rows = _facts_rows()
    assert len(rows) == len(card.CARD_RESULTS) == 11
    for (title, task, metric, score), result in zip(rows, card.CARD_RESULTS):
        assert (result.title, result.task, result.metric, result.score) == (title, task, metric, score)


@pytest.mark.skipif(not FACTS.exists(), reason=f"the card's facts file is not beside this checkout ({FACTS})")
def test_paper_matches_the_facts_file():
    text = FACTS.read_text(encoding="utf-8")
    assert card.PAPER.arxiv in text and card.PAPER.bibtex_key in text and card.PAPER.title in text


def test_card_result_lookup_and_its_error():
    assert card.card_result("beans_detection", "probe").score == 0.408
    with pytest.raises(KeyError, match="beans_classification/probe"):
        card.card_result("beans", "probe")
