"""``avex-hub benchmark SUITE --data DIR --out results.md``: the model card's table, our row beside the card's.

    avex-hub benchmark beans --data ~/beans --out beans.md               # BEANS classification and detection
    avex-hub benchmark birdset --data ~/birdset --sets HSN,POW --out birdset.md
    avex-hub benchmark individual-id --data ~/ids --layers all --out ids.md
    avex-hub benchmark beans --data ~/beans --plan --out plan.md         # read the sets, count what would be embedded

Suites, their layouts and the probe protocol: :mod:`avex_hub.suites` (README, "Reproducing the model card"). Writes
``--out`` (markdown), ``.json`` beside it and ``.failures.csv`` when listed files were skipped; embeddings are cached
in ``--cache`` (default ``<out>.cache``), so a re-run resumes. Exit codes: 0 every set ran; 1 no set could be read
(the report says why and holds no number of ours) or the weights could not be loaded; 2 usage (bad arguments, an
--out that cannot be written); 3 some sets could not be read (the others are reported); 130 interrupted.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from . import options, terminal
from .errors import CommandError, ExitCode, UsageError
from .model import load_model

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("benchmark",)


def _listed(kind):
    def parse(value: str):
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of {kind.__name__} values, got {value!r}") \
                from None
    return parse


def add_parsers(sub) -> None:
    """Register ``benchmark`` on ``sub`` (the CLI's subparsers)."""
    from ..suites.protocol import ProbeProtocol
    from ..suites.runner import suite_names

    default = {f.name: f.default for f in fields(ProbeProtocol)}
    # allow_abbrev=False, as for embed: an option is its full name (--seed would otherwise quietly mean --seeds)
    p = sub.add_parser("benchmark", help="reproduce the model card's table on a benchmark suite", allow_abbrev=False,
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("suite", choices=suite_names(), metavar="SUITE", help=f"one of {', '.join(suite_names())}")
    p.add_argument("--data", required=True, help="the suite's data folder (README: what each suite reads)")
    options.add(p, "--out", help="the report (markdown; .json beside it)")
    p.add_argument("--sets", type=_listed(str), default=None, help="comma list of data sets (default: the suite's)")
    options.add(p, "--layers", default=default["layers"],
                help="last, a layer index, a comma list (mixed by the probe) or all (default: %(default)s)")
    listed = {name: ",".join(f"{v:g}" for v in default[name]) for name in ("seeds", "lrs")}
    p.add_argument("--seeds", type=_listed(int), default=default["seeds"],
                   help=f"comma list (default: {listed['seeds']})")
    p.add_argument("--lrs", type=_listed(float), default=default["lrs"],
                   help=f"learning rates to select from on validation (default: {listed['lrs']})")
    options.add(p, "--epochs", default=default["epochs"], help="most epochs per probe (default: %(default)s)")
    for name in ("--model", "--checkpoint", "--device", "--precision", "--no-progress"):
        options.add(p, name)
    p.add_argument("--cache", type=Path, default=None, help="embedding cache folder (default: <out>.cache)")
    options.add(p, "--batch-size", default=16, help="clips per forward pass (default: 16)")
    options.add(p, "--workers", default=0, help="decoding worker processes (default: 0)")
    p.add_argument("--plan", action="store_true", help="read the sets and report their sizes; embed nothing")


def run(args) -> int:
    """Run ``benchmark``; what stops it is a CommandError (exit code 1) or a UsageError (2)."""
    from ..encoder.precision import resolve_device
    from ..suites.protocol import ProbeProtocol
    from ..suites.runner import run_benchmark

    try:
        layers = tuple(args.layers) if isinstance(args.layers, list) else args.layers  # the protocol's form
        protocol = ProbeProtocol(layers=layers, seeds=args.seeds, lrs=args.lrs, epochs=args.epochs)
        device = resolve_device(args.device)
        _check_writable(args.out)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    model = load_model(args, device=device)
    try:
        report = run_benchmark(model, args.suite, args.data, protocol=protocol, sets=args.sets, out=args.out,
                               cache=args.cache, batch_size=args.batch_size, num_workers=args.workers,
                               precision=args.precision, progress=not args.no_progress, plan=args.plan)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    except ValueError as error:  # unknown set names, layers the model lacks, weights of another architecture
        raise UsageError(str(error)) from None
    except OSError as error:  # the report or a cache could not be written (disk full, permissions)
        raise CommandError(f"{error}; the embeddings cached so far are kept, run again to resume") from None
    return _status(report, args)


def _check_writable(out: Path) -> None:
    """Fail before any work when ``--out`` cannot be written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    probe = out.with_name(f".{out.name}.writable")
    probe.touch()
    probe.unlink()


def _status(report, args) -> int:
    missing = report.not_run
    done = len(report.sets) - len(missing)
    if not done:
        terminal.error(f"no data set could be read under {args.data}; {args.out} says why and holds no "
                       "number of ours")
        return ExitCode.ERROR
    verb = "read" if report.plan else "scored"
    terminal.say(f"{verb} {done} of {len(report.sets)} data sets; wrote {args.out}")
    if missing:
        terminal.error(f"{len(missing)} sets could not be read or failed: "
                       f"{', '.join(f'{s.suite}/{s.name}' for s in missing)} (reasons in {args.out})")
        return ExitCode.PARTIAL
    return ExitCode.OK
