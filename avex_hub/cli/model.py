"""Load the model a command asked for and check where it runs, or stop it with one line that says what to do."""

from __future__ import annotations

from .errors import CommandError, UsageError

__all__ = ["load_model", "runtime_device"]


def load_model(args, name: str | None = None, *, checkpoint: str | None = None, device=None):
    """The model of ``--model``/``--checkpoint`` (``name`` and ``checkpoint`` override them), built by
    :func:`avex_hub.hub.loading.build_model`; its progress bar follows ``--no-progress``.

    Weights that cannot be had or do not match their digest stop the command with exit code 1 (CommandError); a
    bad ``--checkpoint`` (missing, not weights of ours) is a UsageError (2); weights that cannot be read (a cached
    copy that is a folder, no permission) end in 1 with what to do."""
    from ..hub.loading import ChecksumError, WeightsNotAvailableError, build_model

    name = name or args.model
    checkpoint = checkpoint or args.checkpoint
    try:
        return build_model(name, checkpoint=checkpoint, device=device, progress=not args.no_progress)
    except (WeightsNotAvailableError, ChecksumError) as error:
        raise CommandError(str(error)) from None
    except (FileNotFoundError, ValueError) as error:  # a bad --checkpoint
        raise UsageError(str(error)) from None
    except OSError as error:  # a cached or given weights path that is a folder, unreadable, ...
        where = error.filename if error.filename is not None else checkpoint or name
        raise CommandError(f"cannot read the weights at {where} ({error.strerror or error}); "
                           + ("check --checkpoint" if checkpoint else
                              f"delete that cached copy and run `avex-hub download {name}`")) from None


def runtime_device(args) -> str:
    """The device a run asks for (the CPU for ``--device auto`` with a runtime other than torch), after checking
    ``--runtime``, ``--precision`` and ``--threads`` before the weights load: a pair that does not exist, a runtime
    off the CPU or its package missing (the line names the extra) is a UsageError."""
    from ..encoder.runtimes import check_runtime

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    device = "cpu" if args.runtime != "torch" and args.device == "auto" else args.device
    try:
        check_runtime(args.runtime, args.precision, device)
    except (ValueError, ImportError) as error:
        raise UsageError(str(error)) from None
    return device
