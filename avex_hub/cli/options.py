"""The options of the command line: their value types (each parses one kind of value and says what it expected) and
the options that more than one command takes, each declared once (:func:`declarations`) and added to a command by
:func:`add` or as a :func:`parent` parser. An option has one name and one meaning across commands;
``tests/test_cli_package.py`` reads every command's parser to hold that."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

__all__ = ["channels", "layers", "location", "local", "number", "positive_int", "positive_float", "at_least_zero",
           "probability", "DEFAULT_MODEL", "declarations", "add", "parent", "local_only"]


def channels(value: str):
    """--channels: 'mix', 'all' or a channel index."""
    if value in ("mix", "all"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mix', 'all' or a channel index, got {value!r}") from None


def layers(value: str):
    """--layers: a layer index, a comma list of them (a list), 'last' or 'all'."""
    if value in ("all", "last"):
        return value
    try:
        items = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer index, a comma list (e.g. 6,-1) or 'all', "
                                         f"got {value!r}") from None
    return items[0] if len(items) == 1 else items


def location(value: str):
    """--out, --raven: a path (``file:///x`` is the path ``/x``), or a URL (s3://, gs://, https://) kept as given (a
    Path would fold its ``//``); a command that writes only local files refuses a URL (:func:`local_only`)."""
    from ..storage.locations import is_url, local_path

    return value if is_url(value) else Path(local_path(value))


def local(value: str) -> Path:
    """--db, --probe, --thresholds, --deployments: a local path (``file:///x`` is the path ``/x``); a URL is refused
    (a Path would turn ``s3://b/db`` into a local folder ``s3:/b/db``)."""
    from ..storage.locations import is_url, local_path

    if is_url(value):
        raise argparse.ArgumentTypeError(f"expected a local path, got the URL {value.split('?')[0]}; give a local path "
                                         "(copy from the store first, or the result to it after)")
    return Path(local_path(value))


def number(kind, holds, rule: str):
    """An argparse type: ``kind`` (int or float) for which ``holds(value)``, else an error saying ``rule``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        if not holds(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {rule}"  # argparse names the type in some messages
    parse.__doc__ = f"An argparse type: {'a whole number' if kind is int else 'a number'} that must be {rule}."
    return parse


positive_int, positive_float = number(int, lambda v: v > 0, "> 0"), number(float, lambda v: v > 0, "> 0")
at_least_zero = number(int, lambda v: v >= 0, ">= 0")
probability = number(float, lambda v: 0.0 < v < 1.0, "between 0 and 1 (exclusive)")


# -- the options more than one command takes, each declared once ------------------------------------------------------
DEFAULT_MODEL = "esp_aves2_sl_beats_all"
# What a command may set for itself when it takes a shared option: never what the option parses (its type, action,
# number of values or name), only how its help reads, its default, whether it is required and, for --format, which
# formats the command writes.
CHANGEABLE = frozenset({"help", "default", "required", "metavar", "choices"})


@functools.cache
def declarations() -> dict[str, dict]:
    """``{option: add_argument keywords}`` of every option that more than one command takes."""
    from ..encoder.model import POOLINGS
    from ..encoder.precision import PRECISIONS
    from ..encoder.runtimes import RUNTIMES
    from ..hub.weights import WEIGHTS

    return {
        # the model and where it runs
        "--model": dict(default=DEFAULT_MODEL, choices=sorted(WEIGHTS), metavar="MODEL",
                        help="published model (default: %(default)s; see `avex-hub info`)"),
        "--checkpoint": dict(help="local weights: a .safetensors file or a folder with label_map.json"),
        "--device": dict(default="auto", help="cpu, cuda, cuda:1 ... (default: auto, cuda if available)"),
        "--batch-size": dict(type=positive_int, default=None, help="windows per batch (default: 2 CPU, 64 CUDA)"),
        "--workers": dict(type=at_least_zero, default=None,
                          help="decoding worker processes (default: on CUDA cores - 1, max 4; on CPU 0 below 4 "
                               "cores, else 1)"),
        "--precision": dict(choices=PRECISIONS, default="fp32",
                            help="fp32 (default); bf16 (CUDA, or CPUs with bf16 units); int8 (CPU, dynamic "
                                 "quantisation: on CPUs it is often the fastest, bf16 the closer to fp32; README's "
                                 "speed table)"),
        "--runtime": dict(choices=tuple(RUNTIMES), default="torch",
                          help="what runs the encoder: torch (default; fp32, bf16, int8), onnxruntime (fp32, int8; "
                               "pip install 'avex-hub[export]') or openvino (fp32, bf16; 'avex-hub[openvino]'), on the "
                               "CPU; the graph is exported once per weights into the user cache. README's speed "
                               "table"),
        # checked with --runtime before the weights load (avex_hub.cli.model.runtime_device), in one line
        "--threads": dict(type=int, default=None,
                          help="the runtime's compute threads (default: the cores less the decoding workers)"),
        "--no-progress": dict(action="store_true", help="no progress bar (the run's summary is still printed)"),
        # what is computed from the audio
        "--window": dict(type=positive_float, default=None,
                         help="window length in seconds (default: the model's preprocessing.window_s, 10, as "
                              "trained)"),
        "--hop": dict(type=positive_float, default=None, help="hop between windows in seconds (default: the window)"),
        "--channels": dict(type=channels, default="mix",
                           help="'mix' (mean of channels, default), 'all' (one row per channel) or a channel index"),
        "--layers": dict(type=layers, default=-1,
                         help="layers: -1 last (default), 0 encoder input, a comma list (e.g. 6,-1; each layer once: "
                              "-1,12 on a 12-layer model is refused), or 'all'"),
        "--pooling": dict(choices=POOLINGS, default="mean", help="pooling over frames"),
        # where it goes
        "--out": dict(required=True, type=location, help="output file"),
        "--overwrite": dict(action="store_true", help="recompute every input and replace --out"),
        "--format": dict(default=None, help="output format"),
        "--raven": dict(type=location, default=None, help="also write one Raven selection table per file here"),
        # many machines and object storage (avex_hub.cli.scale): text here, parsed and checked there, so that a bad
        # value is one line and never echoed
        "--storage-options": dict(default=None, metavar="JSON",
                                  help="fsspec arguments for s3://, gs://, https:// inputs and outputs, e.g. "
                                       "'{\"endpoint_url\": \"http://minio:9000\"}' or '{\"profile\": \"archive\"}' "
                                       "(credentials: better the environment or a profile; S3 without any reads "
                                       "anonymously)"),
        "--shard": dict(default=None, metavar="I/N",
                        help="process only this machine's share of the inputs: shard I of N (1 <= I <= N), by a "
                             "stable hash of each input's path relative to the folder or prefix given (after that "
                             "folder's own name when several are given); `avex-hub merge` joins the N outputs"),
        # the engine (avex_hub.cli.engine): this machine, or Ray Data on a cluster the user started
        "--engine": dict(choices=("local", "ray"), default="local",
                         help="local (default): this machine; ray: Ray Data (pip install 'avex-hub[ray]'): decoding "
                              "in CPU tasks, the model in an actor pool (one actor per GPU, else one per node), the "
                              "same rows"),
        "--address": dict(default=None, metavar="ADDR",
                          help="with --engine ray: the running cluster's head (host:port, ray://host:port, or auto "
                               "on one of its nodes); default RAY_ADDRESS, else a local Ray on this machine"),
        "--db": dict(required=True, type=local, help="the embedding database folder"),
        # species, scores and thresholds
        "--species": dict(default=None, help="species list: one scientific name a line"),
        "--probe": dict(type=local, default=None, help="a probe file (from avex-hub train-classifier)"),
        "--threshold": dict(type=probability, default=None, help="score threshold"),
        "--thresholds": dict(type=local, default=None, metavar="FILE",
                             help="thresholds file of avex-hub calibrate: calibrated probabilities beside the raw "
                                  "scores"),
        "--epochs": dict(type=positive_int, default=None, help="most training epochs"),
        # recording times and places
        "--times": dict(action="store_true",
                        help="start_time and end_time (ISO 8601 with the offset) of every window, from each "
                             "recording's start (GUANO, AudioMoth comment, file name); empty where it is unknown"),
        "--deployments": dict(type=local, default=None,
                              help="CSV: folder or recorder -> site, latitude, longitude, start, end, timezone"),
        "--time-pattern": dict(default=None, metavar="PATTERN",
                               help="strptime pattern of the start time in file paths, e.g. %%Y%%m%%d-%%H%%M%%S "
                                    "(after GUANO and AudioMoth metadata, before the built-in AudioMoth and Song "
                                    "Meter names)"),
        "--timezone": dict(default=None, metavar="ZONE",
                           help="zone of recorders that write local time without an offset (Europe/Berlin, +02:00, "
                                "UTC)"),
    }


def add(parser, name: str, **changes) -> argparse.Action:
    """Add the shared option ``name`` to ``parser`` (a parser or an argument group) as :func:`declarations` has it;
    ``changes`` set what one command may set for itself (see ``CHANGEABLE``)."""
    if set(changes) - CHANGEABLE:
        raise TypeError(f"{name}: a command may change only {sorted(CHANGEABLE)} of a shared option, not "
                        f"{sorted(set(changes) - CHANGEABLE)}")
    return parser.add_argument(name, **{**declarations()[name], **changes})


def parent(*names: str) -> argparse.ArgumentParser:
    """A parent parser (``parents=[...]``) holding the shared options ``names`` as declared."""
    parser = argparse.ArgumentParser(add_help=False)
    for name in names:
        add(parser, name)
    return parser


def local_only(args) -> None:
    """A command that writes local files only refuses an ``--out`` or ``--raven`` URL in one line (exit code 2)."""
    from .errors import UsageError

    for dest in ("out", "raven"):
        value = getattr(args, dest, None)
        if isinstance(value, str):
            raise UsageError(f"--{dest} {value}: avex-hub {args.command} writes local files only (embed, classify "
                             "and merge write to object storage); give a local path and copy the result to the store")
