"""Archives bigger than one machine: what ``avex-hub embed|classify`` do with ``--storage-options JSON`` (fsspec
arguments for URLs, :mod:`avex_hub.storage.locations`) and an ``--out`` or ``--raven`` in object storage
(:mod:`avex_hub.embed.destinations`).

The options are declared in :mod:`avex_hub.cli.options`; :mod:`avex_hub.cli.inference` runs inside
:func:`run_context` and calls the hooks here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from . import terminal
from .errors import UsageError

__all__ = ["run_context", "part_written"]


@contextlib.contextmanager
def run_context(args) -> Iterator[None]:
    """Check ``--storage-options`` (one line and exit code 2 when wrong; ``args`` then holds the parsed value) and
    keep the storage options in force for the command."""
    from ..storage.locations import parse_storage_options, using_options

    try:
        if args.storage_options is not None:
            args.storage_options = parse_storage_options(args.storage_options)
    except ValueError as error:
        raise UsageError(str(error)) from None
    with using_options(args.storage_options), _staged(args):
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
        finally:
            stage.upload_parts()
        if stage.local.is_file():
            stage.publish((".settings.json", ".failures.csv"))
            if remote_raven:
                stage.publish_folder(args.raven, raven)
            terminal.say(f"uploaded {out} with its parts and sidecars")
    finally:
        stage.close()


def part_written(args, part: Path) -> None:
    """A part just written: to the store at once when ``--out`` is there."""
    if getattr(args, "stage", None) is not None:
        args.stage.upload_part(part)
