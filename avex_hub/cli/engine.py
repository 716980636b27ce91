"""``--engine local|ray`` and ``--address`` of ``avex-hub embed|classify``: which engine computes each file's rows.

``local`` (default) is :func:`avex_hub.embed.inference.iter_file_results` on this machine; ``ray`` is the same
results from Ray Data (:func:`avex_hub.integrations.ray_data.iter_file_results`), on the cluster at ``--address``
(default ``RAY_ADDRESS``) or a local Ray started on this machine. The command writes, resumes and merges the
results of either in the same way (:mod:`avex_hub.cli.inference`).
"""

from __future__ import annotations

from .errors import UsageError

__all__ = ["check_engine", "file_results"]


def check_engine(args) -> None:
    """Before the weights load: ``--address`` only with ``--engine ray``; the Ray cluster reached (or a local one
    started) now, so a missing extra or a cluster that does not answer is one line and exit code 2."""
    if args.engine != "ray":
        if args.address is not None:
            raise UsageError(f"--address {args.address} belongs to --engine ray; add --engine ray, or drop --address")
        return
    from ..integrations.ray_data import connect

    try:
        connect(args.address)
    except (ConnectionError, ModuleNotFoundError) as error:
        raise UsageError(str(error)) from None


def file_results(args, model, files: list[str], settings, device):
    """Each file's :class:`~avex_hub.embed.inference.FileResult` from the engine ``--engine`` names, as it
    completes. On Ray, ``--device cpu`` keeps the model on CPU actors and ``--workers`` has no use (decoding runs
    in Ray's tasks)."""
    if args.engine == "ray":
        from ..integrations.ray_data import iter_file_results as ray_results

        return ray_results(model, files, settings, batch_size=args.batch_size, threads=args.threads,
                           device="cpu" if args.device == "cpu" else "auto", progress=not args.no_progress)
    from ..embed import inference

    return inference.iter_file_results(model, files, settings, batch_size=args.batch_size,
                                       num_workers=args.workers, device=device, progress=not args.no_progress,
                                       threads=args.threads)
