"""``avex-hub``, the command line: embed or classify folders of recordings, agile modelling, monitoring outputs,
benchmarks; inspect, download, verify and export the weights; merge the outputs of sharded runs.

    avex-hub embed|classify           # folders of recordings -> rows per window (avex_hub.cli.inference)
    avex-hub info|download|verify     # the published weights and the cache (avex_hub.cli.weights)
    avex-hub export                   # the model as one ONNX file (avex_hub.cli.export)
    avex-hub index|search|label|train-classifier|detect|prune|export-labels|import-labels   # (avex_hub.cli.agile)
    avex-hub benchmark                # the model card's table (avex_hub.cli.benchmark)
    avex-hub scores|times|events|review|calibrate|presence   # monitoring outputs (avex_hub.cli.monitoring)
    avex-hub merge                    # the outputs of sharded runs joined into one (avex_hub.cli.scale)

``main`` (the console script, ``python -m avex_hub`` and ``python -m avex_hub.cli``) builds the parser
(:mod:`avex_hub.cli.app`), runs the command and returns its exit code, by name in :class:`ExitCode`: every failure
is one line on stderr and a documented code, never a traceback.
"""

from .app import build_parser, main
from .errors import CommandError, ExitCode, UsageError
from .inference import shard_name

# The exit codes under the names scripts and tests import (ExitCode's members)
EXIT_OK, EXIT_ERROR, EXIT_USAGE = ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE
EXIT_PARTIAL, EXIT_BUSY, EXIT_INTERRUPTED = ExitCode.PARTIAL, ExitCode.BUSY, ExitCode.INTERRUPTED

__all__ = ["main", "build_parser", "shard_name", "ExitCode", "CommandError", "UsageError", "EXIT_OK", "EXIT_ERROR",
           "EXIT_USAGE", "EXIT_PARTIAL", "EXIT_BUSY", "EXIT_INTERRUPTED"]
