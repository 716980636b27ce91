"""``avex-hub merge``, and archives bigger than one machine: what ``avex-hub embed|classify`` do with
``--shard I/N`` (this machine's share of the inputs, :mod:`avex_hub.embed.split`), ``--storage-options JSON`` (fsspec
arguments for URLs, :mod:`avex_hub.storage.locations`) and an ``--out`` or ``--raven`` in object storage
(:mod:`avex_hub.embed.destinations`).

    avex-hub classify s3://archive/2024/ --out s3://results/2.csv --shard 2/8     # on machine 2 of 8
    avex-hub merge s3://results/1.csv ... s3://results/8.csv --out 2024.csv --inputs s3://archive/2024/

The options are declared in :mod:`avex_hub.cli.options`; :mod:`avex_hub.cli.inference` runs inside
:func:`run_context` and calls the hooks here (:func:`take_shard`, :func:`part_written`, :func:`record_shard`).

Exit codes (merge): 0 merged; 2 outputs that do not belong together (another model or setting, other columns, an
input in two outputs, two copies of one shard, shards of two splits, mixed formats, a shard record that does not
match its output), a damaged or missing output, an --out that exists (without --overwrite) or cannot be written,
--inputs with no audio or two inputs of one key, or a store that cannot be used; 3 some inputs failed in their
run or are in no output (listed in ``<out>.failures.csv`` with the shard to rerun); 1 a write that failed (a full
disk: --out was not replaced).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Iterator

from ..embed.split import RECORD_SUFFIX
from . import options, terminal
from .errors import CommandError, ExitCode, UsageError

__all__ = ["COMMANDS", "STORES", "add_parsers", "run", "run_context", "part_written", "take_shard", "ShardPlan",
           "record_shard"]

COMMANDS = ("merge",)
STORES = True  # merge's --out may be a URL


def add_parsers(sub) -> None:
    """Register merge on ``sub`` (the CLI's subparsers)."""
    merge = sub.add_parser("merge", allow_abbrev=False, help="join the outputs of sharded runs into one output")
    merge.add_argument("outputs", nargs="+", metavar="OUTPUT", help="outputs of avex-hub embed|classify (one format)")
    options.add(merge, "--out", help="the merged output (.parquet, .npz or .csv, as the inputs)")
    merge.add_argument("--inputs", nargs="+", metavar="PATH", default=None,
                       help="the PATHs the runs were given: inputs no output covered are reported (exit code 3)")
    options.add(merge, "--overwrite", help="replace an existing --out that is not one of the outputs nor an earlier "
                                            "merge of them")
    options.add(merge, "--storage-options")


def run(args) -> int:
    """``avex-hub merge``."""
    from ..embed.merge import merge_outputs
    from ..embed.outputs import text_cell
    from ..storage.locations import StorageAccessError

    with run_context(args, staged=False):
        try:
            result = merge_outputs(args.outputs, str(args.out), inputs=args.inputs, overwrite=args.overwrite)
        except (ValueError, FileNotFoundError, StorageAccessError) as error:
            raise UsageError(str(error)) from None
        except OSError as error:  # a failed write (a full disk): --out was not replaced
            raise CommandError(f"--out {args.out}: the merge stopped ({type(error).__name__}: {error}); nothing was "
                               "replaced: make room or choose another --out and merge again") from None
    terminal.say(f"merged {len(args.outputs)} outputs into {args.out}: {result.rows} rows from {result.files} files; "
                 f"failed or not covered: {len(result.failures)}")
    if result.uncovered:
        terminal.error(f"{len(result.uncovered)} inputs are in no output (listed in {args.out}.failures.csv): "
                       + ", ".join(text_cell(f) for f in result.uncovered[:10])
                       + (" ..." if len(result.uncovered) > 10 else ""))
    return ExitCode.PARTIAL if result.failures else ExitCode.OK


@contextlib.contextmanager
def run_context(args, *, staged: bool = True) -> Iterator[None]:
    """Check ``--shard`` and ``--storage-options`` (one line and exit code 2 when wrong; ``args`` then holds the
    parsed values) and keep the storage options in force for the command."""
    from ..embed.split import parse_shard
    from ..storage.locations import parse_storage_options, using_options

    try:
        if getattr(args, "shard", None) is not None:
            args.shard = parse_shard(args.shard)
        if args.storage_options is not None:
            args.storage_options = parse_storage_options(args.storage_options)
    except ValueError as error:
        raise UsageError(str(error)) from None
    with using_options(args.storage_options):
        if not staged:  # merge writes through destinations itself
            yield
            return
        with _staged(args):
            yield


@contextlib.contextmanager
def _staged(args) -> Iterator[None]:
    """``--out`` or ``--raven`` in object storage: the run works in a local folder mirrored to the store
    (:class:`avex_hub.embed.destinations.Staging`); ``args`` then names the local copies, and the store gets each
    part as it is written, the output and its sidecars at the end (parts also when the run stops)."""
    from ..embed.destinations import Staging, exists

    out, raven = getattr(args, "out", None), getattr(args, "raven", None)
    remote_raven = isinstance(raven, str)
    if not isinstance(out, str):
        if remote_raven:
            raise UsageError(f"--raven {raven}: Raven tables go to object storage only with --out there too")
        args.stage = None
        yield
        return
    stage = Staging(out)
    try:
        try:
            stage.probe()
            found = 0 if args.overwrite else stage.fetch_parts()  # a rerun goes on from the parts in the store
            if not found and exists(out) and not args.overwrite:
                raise UsageError(f"{out} exists and was not written by a resumable avex-hub run (no {out}.parts/); "
                                 "pass --overwrite to replace it or choose another --out")
        except (OSError, ValueError) as error:
            raise UsageError(f"--out {out}: {error}") from None
        args.out, args.stage = stage.local, stage
        if remote_raven:
            args.raven = stage.folder / "raven"
        try:
            yield
        except UsageError as error:  # a message about --out names what the user gave, not the local copy
            raise UsageError(str(error).replace(str(stage.local), out)) from None
        finally:
            stage.upload_parts()
        if stage.local.is_file():
            stage.publish((".settings.json", ".failures.csv", RECORD_SUFFIX))
            if remote_raven:
                stage.publish_folder(args.raven, raven)
            terminal.say(f"uploaded {out} with its parts and sidecars")
    finally:
        stage.close()


def part_written(args, part: Path) -> None:
    """A part just written: to the store at once when ``--out`` is there."""
    if getattr(args, "stage", None) is not None:
        args.stage.upload_part(part)


@dataclasses.dataclass
class ShardPlan:
    """A sharded run's share: ``keys`` of its inputs and their ``positions`` in the whole walk."""

    shard: object
    keys: dict[str, str]
    positions: dict[str, int]


def take_shard(args, search):
    """``(search with only this shard's files, ShardPlan)``, or ``(search, None)`` without ``--shard``."""
    if getattr(args, "shard", None) is None:
        return search, None
    from ..embed.split import input_keys

    try:
        keys = input_keys(search.files, [str(p) for p in args.paths])
    except ValueError as error:
        raise UsageError(str(error)) from None
    mine = [f for f in search.files if args.shard.holds(keys[f])]
    positions = {f: i for i, f in enumerate(search.files)}
    plan = ShardPlan(args.shard, {f: keys[f] for f in mine}, {f: positions[f] for f in mine})
    return dataclasses.replace(search, files=mine), plan


def record_shard(out, plan: ShardPlan | None, failures: dict[str, str]) -> None:
    """Write ``<out>.shard.json``: what this shard covered (``avex-hub merge`` reads it)."""
    if plan is None:
        return
    from ..embed.destinations import sibling, writing
    from ..embed.split import ShardRecord

    record = ShardRecord(plan.shard, {key: [plan.positions[f], f, "failed" if f in failures else "written"]
                                      for f, key in plan.keys.items()})
    with writing(sibling(out, RECORD_SUFFIX), ".json") as tmp:
        tmp.write_text(record.to_json(), encoding="utf-8")
