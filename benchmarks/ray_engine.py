"""``--engine ray`` against the plain command line on the same folder, timed as whole processes, in turn (README,
"Ray as the engine"): what Ray costs on one machine, as a ratio per pair of runs.

    python benchmarks/ray_engine.py --dir /tmp/ray-bench --runs 3     # recordings, weights, then the timed pairs
    python benchmarks/ray_engine.py --dir /tmp/ray-bench --print      # only the two commands, to time elsewhere

Each run is a fresh ``avex-hub embed ... --overwrite`` process (the Ray one starts a local Ray, as ``--engine ray``
without ``--address`` does, so its time includes that start and the actors' start); plain and Ray alternate, so a
drift of the machine's speed falls on both. The weights are random (the encoder's speed does not depend on their
values) at the published size (768-dim, 12 layers: the NatureLM-audio encoder's architecture, which has no species
head, so the task is ``embed``). The outputs of the two are checked equal to 1e-5 after the last pair.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL = "esp_aves2_naturelm_audio_v1_beats"


def prepare(folder: Path, recordings: int, seconds: float) -> dict[str, list[str]]:
    """Write the recordings and weights under ``folder``; the two command lines to compare, by name."""
    from safetensors.torch import save_file

    from avex_hub import build_model
    from avex_hub.audio.synthetic import make_synthetic_dataset

    weights = folder / "model.safetensors"
    if not weights.is_file():
        model = build_model(MODEL, pretrained=False)
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(weights))
    data = make_synthetic_dataset(folder / "syn", num_species=2, individuals_per_species=1, clips_per_individual=1,
                                  num_long_recordings=recordings, long_recording_s=seconds)
    common = ["avex-hub", "embed", str(data.root / "long"), "--model", MODEL, "--checkpoint", str(weights),
              "--no-progress", "--overwrite"]
    return {"plain": [*common, "--out", str(folder / "plain.npz")],
            "ray": [*common, "--out", str(folder / "ray.npz"), "--engine", "ray"]}


def timed(command: list[str]) -> float:
    """Wall seconds of ``command`` as a process (its output discarded; a failed run stops the benchmark)."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    return time.perf_counter() - started


def same_rows(folder: Path) -> float:
    """max|Δ| of the two outputs' embeddings (their windows checked equal)."""
    import numpy as np

    plain, ray = np.load(folder / "plain.npz"), np.load(folder / "ray.npz")
    for key in ("file", "channel", "start_s", "end_s", "layer"):
        assert np.array_equal(plain[key], ray[key]), key
    return float(np.abs(plain["embeddings"] - ray["embeddings"]).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the recordings, weights and outputs go")
    parser.add_argument("--recordings", type=int, default=4, help="recordings in the folder (default: 4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each (default: 60)")
    parser.add_argument("--runs", type=int, default=3, help="timed pairs (default: 3)")
    parser.add_argument("--print", action="store_true", help="print the two commands and stop")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    commands = prepare(args.dir, args.recordings, args.seconds)
    if args.print:
        for command in commands.values():
            print(shlex.join(command))
        return 0
    print(f"{args.recordings} recordings of {args.seconds:g} s; load average before: {os.getloadavg()}")
    times: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(args.runs):
        for name, command in commands.items():
            times[name].append(timed(command))
        print(f"pair {run + 1}: plain {times['plain'][-1]:.1f} s, ray {times['ray'][-1]:.1f} s, "
              f"ray/plain {times['ray'][-1] / times['plain'][-1]:.2f}")
    ratios = [r / p for r, p in zip(times["ray"], times["plain"])]
    print(f"median: plain {statistics.median(times['plain']):.1f} s, ray {statistics.median(times['ray']):.1f} s, "
          f"ray/plain {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
          f"load average after: {os.getloadavg()}")
    print(f"embeddings max|Δ| ray vs plain: {same_rows(args.dir):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
