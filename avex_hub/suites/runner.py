"""Run a benchmark suite: read each data set from its published layout, embed it once, probe it, and report.

    from avex_hub.suites.runner import run_benchmark
    report = run_benchmark(model, "beans-classification", "/data/beans", out="results.md")
    print(report.to_markdown())          # the card's table with our row beside it, then one row per data set

A set that cannot be read (not downloaded, a file missing, a layout that does not parse) is "not run", with the
reason, and left out of every aggregate; no number is ever written for it. Embeddings are cached under ``cache``
(default ``<out>.cache/``) per set and split, so a run that stops resumes where it was, and a second run with
another protocol (seeds, learning rates, epochs) embeds nothing again.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..audio.decoding import AudioDecodeError
from ..embed.cache import model_digest
from ..heads.train_options import ExtractOptions
from .beans import BEANS_CLASSIFICATION, BEANS_CONTROLS, BEANS_DETECTION, read_beans_set
from .beans_zero import BEANS_ZERO_SETS, read_beans_zero
from .birdset import BIRDSET_CARD_SETS, BIRDSET_SETS, read_birdset
from .data import ROLES, SetData
from .manifest import INDIVIDUAL_ID_SETS, VOCAL_REPERTOIRE_SETS, read_manifest_set
from .protocol import ProbeProtocol, score_set
from .report import BenchmarkReport, SetResult

__all__ = ["Suite", "SUITES", "SUITE_GROUPS", "suite_names", "read_suite", "run_benchmark"]


@dataclass(frozen=True)
class ReadContext:
    """What a reader may need besides the data folder and the set name."""

    protocol: ProbeProtocol
    work: Path  # where a reader may write (BEANS-Zero's clips)
    progress: bool = False


@dataclass(frozen=True)
class Suite:
    """A benchmark of the card's table: its data sets (``sets`` by default, any of ``known``), the tasks scored,
    the card's row key (``card``; None: the card has no number for it) and the reader of one set."""

    name: str
    title: str
    card: str | None
    sets: tuple[str, ...]
    known: tuple[str, ...]
    tasks: tuple[str, ...]
    read: Callable[[Path, str, ReadContext], SetData]
    data: str  # what --data points at
    controls: tuple[str, ...] = ()  # non-animal control sets among ``sets``


def _beans(root: Path, name: str, read: ReadContext) -> SetData:
    return read_beans_set(root, name, val_fraction=read.protocol.val_fraction, seed=read.protocol.split_seed)


def _birdset(root: Path, name: str, read: ReadContext) -> SetData:
    return read_birdset(root, name, val_fraction=read.protocol.val_fraction, seed=read.protocol.split_seed)


def _manifest(roles: tuple[str, ...]) -> Callable[[Path, str, ReadContext], SetData]:
    def read_set(root: Path, name: str, read: ReadContext) -> SetData:
        return read_manifest_set(root, name, roles=roles, val_fraction=read.protocol.val_fraction,
                                 seed=read.protocol.split_seed)
    return read_set


def _beans_zero(root: Path, name: str, read: ReadContext) -> SetData:
    return read_beans_zero(root, name, work=read.work, seed=read.protocol.split_seed, progress=read.progress)


_ALL = ("probe", "retrieval", "clustering")
SUITES: dict[str, Suite] = {suite.name: suite for suite in (
    Suite("beans-classification", "BEANS classification", "beans_classification", BEANS_CLASSIFICATION,
          BEANS_CLASSIFICATION, _ALL, _beans, "a BEANS checkout with data/ prepared by its scripts", BEANS_CONTROLS),
    Suite("beans-detection", "BEANS detection", "beans_detection", BEANS_DETECTION, BEANS_DETECTION,
          ("probe", "retrieval"), _beans, "a BEANS checkout with data/ prepared by its scripts"),
    Suite("birdset", "BirdSet (dedicated train)", "birdset", BIRDSET_CARD_SETS, BIRDSET_SETS, ("probe", "retrieval"),
          _birdset, "a folder with BirdSet's HSN/, POW/, ... folders (metadata parquet, extracted audio)"),
    Suite("individual-id", "Individual ID", "individual_id", INDIVIDUAL_ID_SETS, INDIVIDUAL_ID_SETS,
          ("probe", "retrieval"), _manifest(ROLES), "a folder with manifest.csv (set, path, label, split)"),
    Suite("vocal-repertoire", "Vocal repertoire", "vocal_repertoire", VOCAL_REPERTOIRE_SETS, VOCAL_REPERTOIRE_SETS,
          ("retrieval", "clustering"), _manifest(("test",)), "a folder with manifest.csv (set, path, label, split)"),
    Suite("beans-zero", "BEANS-Zero (held out)", None, BEANS_ZERO_SETS, (), _ALL, _beans_zero,
          "a folder of BEANS-Zero's shard*.parquet (or hf://datasets/EarthSpeciesProject/BEANS-Zero)"),
)}
SUITE_GROUPS = {"beans": ("beans-classification", "beans-detection")}


def suite_names() -> list[str]:
    """Every name ``run_benchmark`` takes: the suites and the groups of suites."""
    return [*SUITES, *SUITE_GROUPS]


def _suites(name: str) -> list[Suite]:
    if name in SUITE_GROUPS:
        return [SUITES[n] for n in SUITE_GROUPS[name]]
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; expected one of {suite_names()}")
    return [SUITES[name]]


def _chosen(suites: list[Suite], sets) -> list[tuple[Suite, tuple[str, ...]]]:
    """Each suite with the sets of it to run: its default sets, or those of ``sets`` it has (a suite that knows no
    fixed list, BEANS-Zero, takes them all). ValueError for a name no suite has."""
    if sets is None:
        return [(suite, suite.sets) for suite in suites]
    known = {name for suite in suites for name in suite.known}
    unknown = [name for name in sets if name not in known and all(suite.known for suite in suites)]
    if unknown:
        raise ValueError(f"{', '.join(s.name for s in suites)} has no sets {unknown}; known: {sorted(known)}")
    return [(suite, tuple(n for n in sets if not suite.known or n in suite.known)) for suite in suites]


def read_suite(suite: Suite, root: Path, name: str, read: ReadContext) -> tuple[SetData | None, str]:
    """``(data, "")`` for a set that reads, ``(None, reason)`` for one that does not (what was missing, where)."""
    try:
        return suite.read(root, name, read), ""
    except (FileNotFoundError, ValueError, KeyError, ImportError, AudioDecodeError) as error:
        return None, f"{type(error).__name__}: {error}"


def run_benchmark(model, suite: str, data: str | os.PathLike, *, protocol: ProbeProtocol | None = None,
                  sets=None, out: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                  batch_size: int = 16, num_workers: int = 0, device=None, precision: str = "fp32",
                  progress: bool = False, plan: bool = False) -> BenchmarkReport:
    """Run ``suite`` (a name of :data:`SUITES` or :data:`SUITE_GROUPS`) on the data under ``data``.

    ``sets`` restricts the data sets (default: the suite's). ``out``: the report is written there (markdown,
    ``.json`` beside it, and ``.failures.csv`` when files were skipped), atomically. ``cache``: embedding caches
    (default ``<out>.cache``, or none without ``out``). ``batch_size``, ``num_workers``, ``device`` and
    ``precision`` concern extraction. ``plan=True`` reads every set and reports what would be embedded (clips
    and seconds of audio per split) without embedding or probing anything.
    """
    protocol = protocol or ProbeProtocol()
    root = str(data) if "://" in str(data) else Path(data).expanduser()  # a URL (BEANS-Zero on the Hub) stays text
    chosen = _chosen(_suites(suite), sets)  # bad names and layers fail before any work
    indices = model.layer_indices(protocol.layer_choice())
    if len(set(indices)) != len(indices):
        raise ValueError(f"layers {protocol.layers} name a layer twice (as indices {indices}); give each layer once")
    cache_dir = Path(cache) if cache is not None else (Path(f"{out}.cache") if out is not None else None)
    work = cache_dir or Path(tempfile.gettempdir()) / "avex-hub-benchmark"
    extract = ExtractOptions(batch_size=batch_size, num_workers=num_workers, device=device, precision=precision,
                             cache_dir=cache_dir, progress=progress)
    results = []
    for spec, names in chosen:
        for name in names:
            results.append(_run_set(model, spec, root, name, protocol, extract,
                                    ReadContext(protocol, work, progress), plan=plan))
    suites = {spec.name: {"title": spec.title, "card": spec.card, "sets": list(spec.sets if spec.known else names),
                          "controls": list(spec.controls), "data": spec.data} for spec, names in chosen}
    report = BenchmarkReport(model_name=model.name, suite=suite, data=str(data), protocol=protocol,
                             sets=results, suites=suites, plan=plan, precision=precision,
                             model_digest=model_digest(model))
    if out is not None:
        report.write(out)
    return report


def _run_set(model, suite: Suite, root: Path, name: str, protocol: ProbeProtocol, extract: ExtractOptions,
             read: ReadContext, *, plan: bool) -> SetResult:
    started = time.perf_counter()
    data, reason = read_suite(suite, root, name, read)
    if data is None:
        return SetResult(suite.name, name, status="not run", reason=reason)
    result = SetResult(suite.name, name, status="planned" if plan else "ok", control=data.control,
                       multilabel=data.multilabel, sizes=data.sizes(), audio_s=data.audio_seconds(),
                       notes=list(data.notes), failures=list(data.failures))
    if not plan:
        try:
            scores = score_set(model, data, protocol, suite.tasks, prefix=f"{suite.name}-{name}", extract=extract)
        except (AudioDecodeError, FileNotFoundError, ValueError) as error:  # a file that fails once embedding
            result.status, result.reason = "failed", f"{type(error).__name__}: {error}"
        else:
            result.scores, result.lr, result.epoch = scores.scores, scores.lr, scores.epoch
            result.notes += scores.notes
    result.seconds = time.perf_counter() - started
    return result
