"""``avex-hub merge``: join the outputs of several runs (the shards of one archive) into one output.

The outputs must be of one format (Parquet or NPZ embeddings, or CSV classifications) and made with the same
settings: model, weights digest, architecture, preprocessing, precision, channels, window, hop, layers and
pooling or top-k and labels, output version (the package version may differ). Anything else is refused, naming the
setting and both values, so embeddings of two models never end up in one table. Outputs whose columns differ (a
run with ``--times`` and one without) and an input file in two outputs are refused as well. Rows are written output by output (in shard order when the runs were sharded), each output's rows
as they are, streamed: Parquet a row group at a time, CSV a line at a time, NPZ a column at a time (each .npy
member written with the joined shape, then every output's rows of that column about a MiB at a time; the arrays
are those ``np.concatenate`` gives: :mod:`avex_hub.embed.npz_join`). Each output's failure list
(``<output>.failures.csv``) joins the merged one. A damaged output (a CSV row of another cell count or without its
final line end, an NPZ or Parquet file cut short) and a shard record that does not list exactly its output's files
are refused, never joined.

An existing ``--out`` is replaced only when it is one of the outputs (a shard's own output then loses its
``.shard.json``, which described the shard) or an earlier merge of them, or with ``overwrite``; an ``--out`` that
names a sidecar or cannot be written is refused before any work.

Given the input PATHs the runs were given, the merge walks them and reports every input no output covered
(neither written nor failed: its shard did not run, or the file came later), naming its shard, in
``<out>.failures.csv``. Inputs are matched by their key (:mod:`avex_hub.embed.split`), so runs on machines that
mount the archive in different places still match; outputs of runs without ``--shard`` are matched by path.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .._files import check_writable
from ..audio.folders import find_audio
from ..storage.locations import is_url, local_path
from . import outputs
from .destinations import exists, probe_write, reading, remove, sibling, writing
from .npz_join import npy_members, npy_parts, write_joined
from .split import RECORD_SUFFIX, ShardRecord, input_keys, shard_of

__all__ = ["MergeResult", "read_output_settings", "merge_outputs"]

_FORMATS = {".parquet": "parquet", ".npz": "npz", ".csv": "csv"}
_NOT_COMPARED = ("avex_hub_version",)  # a release may differ between machines; what it writes is output_version


@dataclass
class MergeResult:
    """What the merge wrote: rows and input files, the failures joined (path -> why) and the inputs no output
    covered (also among the failures)."""

    rows: int
    files: int
    failures: dict[str, str] = field(default_factory=dict)
    uncovered: list[str] = field(default_factory=list)


def _format(path: str) -> str:
    suffix = Path(path.split("?")[0]).suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{path}: merge joins .parquet, .npz or .csv outputs of avex-hub embed|classify, found "
                         f"{suffix or 'no extension'}")
    return _FORMATS[suffix]


def read_output_settings(path: str) -> dict:
    """The settings an output records: Parquet schema metadata ``avex_hub``, the NPZ field ``settings``, or the
    CSV sidecar ``<out>.settings.json``. ValueError when it has none (not an avex-hub output)."""
    fmt = _format(path)
    try:
        if fmt == "csv":
            with reading(sibling(path, ".settings.json")) as local:
                return json.loads(local.read_text(encoding="utf-8"))
        with reading(path) as local:
            if fmt == "npz":
                with np.load(local, allow_pickle=False) as data:
                    return json.loads(str(data["settings"]))
            import pyarrow.parquet as pq

            return json.loads(pq.read_schema(local).metadata[b"avex_hub"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: records no avex-hub settings ({type(error).__name__}: {error}); merge takes outputs "
                         "of avex-hub embed|classify") from None
    except FileNotFoundError as error:
        raise ValueError(f"{path}: cannot read it ({error}); check the path (a CSV needs its .settings.json "
                         "beside it)") from None
    except (zipfile.BadZipFile, EOFError, OSError) as error:  # an .npz cut short or empty
        raise ValueError(f"{path}: not a whole .{fmt} ({type(error).__name__}: {error}); the output is damaged or cut "
                         "short: run its shard again (it resumes from its parts) or leave it out") from None


def _compared(settings: dict) -> dict:
    """The settings two outputs must share to be merged."""
    return {k: v for k, v in settings.items() if k not in _NOT_COMPARED}


def _check_same_settings(paths: list[str], settings: list[dict]) -> None:
    first = _compared(settings[0])
    for path, other in zip(paths[1:], settings[1:]):
        other = _compared(other)
        differ = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if differ:
            shown = "; ".join(f"{k}: {_short(first.get(k))} vs {_short(other.get(k))}" for k in differ[:3])
            models = " of two models" if {"weights_sha256", "model", "architecture"} & set(differ) else ""
            raise ValueError(f"cannot merge {paths[0]} and {path}: they were made with different settings{models} "
                             f"({shown}{'; ...' if len(differ) > 3 else ''}); merge only outputs of one model and one "
                             "set of settings, or run the odd one again with the same --model/--checkpoint and options")


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:12] + "..." + text[-6:]


def _records(paths: list[str]) -> list[ShardRecord | None]:
    records = []
    for path in paths:
        source = sibling(path, RECORD_SUFFIX)
        if not exists(source):
            records.append(None)
            continue
        with reading(source) as local:
            records.append(ShardRecord.from_json(local.read_text(encoding="utf-8"), source))
    known = [r for r in records if r is not None]
    if known and len(known) != len(records):
        lacking = next(path for path, r in zip(paths, records) if r is None)
        raise ValueError(f"some outputs were made with --shard and some without ({lacking} has no {RECORD_SUFFIX}: "
                         "a run without --shard, a merge, or a sharded run stopped before its record); merge the "
                         "shards of one split, running that shard again if it was one")
    counts = {r.shard.count for r in known}
    if len(counts) > 1:
        raise ValueError(f"the outputs come from splits into different numbers of shards ({sorted(counts)}); merge "
                         "the shards of one split")
    seen: dict[int, str] = {}
    for path, record in zip(paths, records):
        if record is not None and record.shard.index in seen:
            raise ValueError(f"{seen[record.shard.index]} and {path} are both shard {record.shard}; leave one out")
        if record is not None:
            seen[record.shard.index] = path
    return records


def _files_of(path: str, fmt: str, local: Path) -> list[str]:
    """The input files an output holds rows of, in order, each once."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        names = pq.read_table(local, columns=["file"]).column("file").to_pylist()
    elif fmt == "npz":
        names = (name for part in npy_parts(local, "file") for name in part.tolist())
    else:
        names = [row[0] for row in _csv_rows(path, local)]
    return list(dict.fromkeys(names))


def _csv_rows(path: str, local: Path) -> Iterator[list[str]]:
    """The rows of a CSV output (header left out), one at a time, each checked: as many cells as the header, the
    file ending in a line end (``outputs.write_csv`` writes both); ValueError in one line for an output cut short or
    damaged."""
    def damaged(found: str) -> ValueError:
        return ValueError(f"{path}: not a whole CSV output of avex-hub classify ({found}); it was cut short or "
                          "changed: run its shard again (it resumes from its parts) or leave it out")

    with open(local, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
        if not size or handle.read(1) != b"\n":
            raise damaged("its last line does not end in a line end")
    with open(local, newline="", encoding="utf-8") as handle:
        try:
            reader = csv.reader(handle, strict=True)
            header = next(reader)
            for row in reader:
                if len(row) != len(header):
                    raise damaged(f"line {reader.line_num} has {len(row)} cells, the header {len(header)}")
                yield row
        except (csv.Error, UnicodeDecodeError) as error:
            raise damaged(f"{type(error).__name__}: {error}") from None


def _failures_of(path: str) -> dict[str, str]:
    source = sibling(path, ".failures.csv")
    if not exists(source):
        return {}
    with reading(source) as local, open(local, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "error"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{source}: not a failure list of avex-hub (columns {reader.fieldnames}, expected path "
                             "and error); run that output's shard again, or delete the file if it is not one")
        return {row["path"]: row["error"] for row in reader}


def _write(fmt: str, locals_: list[Path], out: str, settings: dict) -> int:
    """The rows of every local output, in order, into ``out`` (written whole or not at all); returns the rows."""
    rows = 0
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with writing(out, ".parquet") as tmp:
            schema = pq.read_schema(locals_[0])
            with pq.ParquetWriter(str(tmp), schema) as writer:
                for local in locals_:
                    source = pq.ParquetFile(local)
                    for group in range(source.num_row_groups):  # one input file's rows per group
                        table = source.read_row_group(group).replace_schema_metadata(schema.metadata)
                        writer.write_table(table)
                        rows += table.num_rows
        return rows
    if fmt == "npz":
        return write_joined(locals_, out, settings)
    with writing(sibling(out, ".settings.json"), ".json") as tmp:
        tmp.write_text(json.dumps(settings, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    with writing(out, ".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as target:
        for i, local in enumerate(locals_):
            with open(local, newline="", encoding="utf-8") as source:
                header = source.readline()
                if i == 0:
                    target.write(header)
                for line in source:  # cells are copied as written (already escaped)
                    target.write(line)
                    rows += 1
    return rows


def merge_outputs(paths: list[str], out: str, *, inputs: list[str] | None = None,
                  overwrite: bool = False) -> MergeResult:
    """Join the outputs ``paths`` into ``out`` (see the module docstring); ``inputs``: the PATHs the runs were given,
    to report the inputs no output covered. An existing ``out`` that is neither one of ``paths`` nor an earlier merge
    of them is replaced only with ``overwrite``. ValueError (one line, what to fix) for outputs that do not belong
    together or an ``out`` that cannot be written."""
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("merge needs at least one output to join")
    fmt = _format(out)
    odd = [p for p in paths if _format(p) != fmt]
    if odd:
        raise ValueError(f"{odd[0]}: the outputs and --out must share one format ({fmt}); merge .parquet with .parquet, "
                         ".npz with .npz, .csv with .csv")
    _check_out(out)
    settings = [read_output_settings(p) for p in paths]
    _check_same_settings(paths, settings)
    records = _records(paths)
    order = sorted(range(len(paths)), key=lambda i: records[i].shard.index if records[i] else i)
    paths, records = [paths[i] for i in order], [records[i] for i in order]
    search = _inputs(inputs, sharded=bool(records) and all(r is not None for r in records))
    with contextlib.ExitStack() as stack:  # every output as a local file (objects copied, removed after)
        locals_ = [stack.enter_context(reading(p)) for p in paths]
        held = {path: _files_of(path, fmt, local) for path, local in zip(paths, locals_)}
        _refuse_repeats(held)
        _check_records(paths, records, held)
        _check_same_columns(paths, [_columns(fmt, local) for local in locals_])
        failures: dict[str, str] = {}
        for path in paths:  # read before --out is written: it may be one of them
            failures.update(_failures_of(path))
        if not overwrite:
            _refuse_foreign_out(out, paths, settings[0], held)
        try:
            rows = _write(fmt, locals_, out, settings[0])
        except (PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError) as error:
            raise ValueError(f"--out {out}: cannot write it ({type(error).__name__}: {error}); choose a folder or "
                             "bucket you may write to") from None
    remove(sibling(out, RECORD_SUFFIX))  # --out was a shard's output: its record describes the shard, not the merge
    uncovered = _uncovered(search, records, held, failures) if search is not None else []
    for path, why in uncovered:
        failures[path] = why
    report = sibling(out, ".failures.csv")
    if failures:
        with writing(report, ".csv") as tmp:
            outputs.write_failures(tmp, failures)
    else:
        remove(report)  # an old report would describe another merge
    return MergeResult(rows, sum(len(v) for v in held.values()), failures, [p for p, _ in uncovered])


def _check_out(out: str) -> None:
    """ValueError before any work for an ``out`` that names a failure list (the one sidecar with an output's
    ending) or cannot be written where it is."""
    if out.endswith(".failures.csv"):
        raise ValueError(f"--out {out}: names the .failures.csv sidecar of {out.removesuffix('.failures.csv')}, not "
                         "an output; give the merged output a name of its own (merged.csv)")
    target = local_path(out)
    if is_url(target):  # write and delete a small object beside it: a store that denies writes fails now
        try:
            probe_write(sibling(out, ".avex-hub-write-test"))
        except OSError as error:
            raise ValueError(f"--out {out}: cannot write there ({type(error).__name__}: {error}); choose a bucket "
                             "or prefix these credentials may write to") from None
        return
    if os.path.isdir(target):
        raise ValueError(f"--out {out} is a folder; give a file name such as {os.path.join(target, 'merged.csv')}")
    check_writable(os.path.dirname(target) or ".", "--out")


def _same_output(a: str, b: str) -> bool:
    if is_url(a) or is_url(b):
        return a == b
    return os.path.realpath(local_path(a)) == os.path.realpath(local_path(b))


def _refuse_foreign_out(out: str, paths: list[str], settings: dict, held: dict[str, list[str]]) -> None:
    """ValueError when ``out`` exists and is not one of the outputs nor an earlier merge of them (an avex-hub output
    of the same settings holding only files these outputs hold): a typo must not destroy another shard's output."""
    if any(_same_output(out, p) for p in paths) or not exists(out):
        return
    why = "not an output of avex-hub embed|classify"
    with contextlib.suppress(ValueError):
        earlier = read_output_settings(out)
        why = "made with other settings"
        if _compared(earlier) == _compared(settings):
            why = "it cannot be read whole"
            with reading(out) as local:
                extra = set(_files_of(out, _format(out), local)) - {f for files in held.values() for f in files}
            if not extra:
                return
            why = f"it holds rows of inputs these outputs do not ({outputs.text_cell(sorted(extra)[0])}...)"
    raise ValueError(f"{out} exists and is not an earlier merge of these outputs ({why}); pass --overwrite to replace "
                     "it or choose another --out")


def _check_records(paths: list[str], records: list, held: dict[str, list[str]]) -> None:
    """A shard record must list as written exactly the inputs its output holds rows of (a run stopped between
    writing the two, or an output replaced by another run, would otherwise report inputs wrongly)."""
    for path, record in zip(paths, records):
        if record is None:
            continue
        written = {outputs.text_cell(entry[1]) for entry in record.inputs.values() if entry[2] == "written"}
        found = set(held[path])
        if written != found:
            differ = sorted(written ^ found)
            merged = f", or delete the record if {path} is a merge" if written < found else ""
            raise ValueError(f"{sibling(path, RECORD_SUFFIX)} does not match {path}: {len(differ)} inputs are in one "
                             f"and not the other ({differ[0]}...; the run stopped between writing them, or the "
                             f"output was replaced); run shard {record.shard} again (it resumes) and merge{merged}")


def _inputs(inputs: list[str] | None, *, sharded: bool):
    """The walk of ``inputs`` (the PATHs the runs were given) with each file's key when the outputs are shards
    (else None: unsharded outputs are matched by path), or None; ValueError when it finds no audio or two inputs
    share a key."""
    if inputs is None:
        return None
    search = find_audio(inputs)
    if not search.files:
        raise ValueError(f"--inputs: no audio files found in {list(inputs)} (looked for .wav, .flac, .mp3, .ogg, ...); "
                         "give the PATHs the runs were given")
    return search, input_keys(search.files, list(inputs)) if sharded else None


def _columns(fmt: str, local: Path) -> list[str]:
    """An output's columns (Parquet's fields, NPZ's arrays, the CSV header), in order."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(local).names
    if fmt == "npz":
        return sorted(npy_members(local))
    with open(local, newline="", encoding="utf-8") as source:
        return next(csv.reader(source), [])


def _check_same_columns(paths: list[str], columns: list[list[str]]) -> None:
    """Outputs with the same settings may still differ in columns the settings do not decide (classify --times and
    its options): rows joined under one header would be shifted, so they are refused, naming the difference."""
    for path, found in zip(paths[1:], columns[1:]):
        if found != columns[0]:
            extra = [c for c in found if c not in columns[0]] or [c for c in columns[0] if c not in found]
            raise ValueError(f"{path} and {paths[0]} have different columns ({', '.join(extra) or 'their order'}: "
                             "one run had --times or --deployments and the other not?); run the odd one again with "
                             "the others' options")


def _refuse_repeats(held: dict[str, list[str]]) -> None:
    owner: dict[str, str] = {}
    for path, files in held.items():
        for name in files:
            if name in owner:
                raise ValueError(f"{name} has rows in both {owner[name]} and {path}; each input belongs in one output "
                                 "(were they made with different --shard splits, or run twice?): leave one out")
            owner[name] = path


def _uncovered(search, records: list, held: dict[str, list[str]],
               failures: dict[str, str]) -> list[tuple[str, str]]:
    """``(input, why)`` for each input of the walk ``search`` (from :func:`_inputs`) that no output holds or lists
    as failed."""
    search, keys = search
    if keys is not None:  # shards: matched by key
        count = records[0].shard.count
        covered = {key for r in records for key in r.inputs}
        return [(f, f"not in any merged output: its shard, {shard_of(keys[f], count)}/{count}, did not run or "
                    "missed it (added later?); run that shard again and merge") for f in search.files
                if keys[f] not in covered]
    covered = {name for files in held.values() for name in files} | set(failures)
    return [(f, "not in any merged output: run avex-hub on it and merge again") for f in search.files
            if outputs.text_cell(f) not in covered]
