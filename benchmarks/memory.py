"""Peak memory of ``model.predict`` against recording length: a file (streamed) and an in-memory array.

    python benchmarks/memory.py                                  # 10 s, 10 min, 2 h; file and array
    python benchmarks/memory.py --lengths 10,600,1800 --out benchmarks/memory.json

Each (input, length) runs in a fresh Python process that builds the esp_aves2_sl_beats_all architecture
(the encoder config of ``avex_hub.hub.weights``; fresh random weights: memory does not depend on their values,
nor on the head's width, set by ``--labels``), calls ``predict`` once (default batch size, or ``--batch-size``), reports
its own peak resident set size during the call (VmHWM after resetting it through ``/proc/self/clear_refs``;
else ``getrusage(RUSAGE_SELF).ru_maxrss`` of the whole process), the RSS before the call, and the
wall time. Test files are 16 kHz mono 16-bit WAV written block by block; arrays are float32 made in the
child. Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RATE = 16_000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="10,600,7200", help="seconds, comma separated (default 10,600,7200)")
    parser.add_argument("--inputs", default="file,array", help="file, array or both (default file,array)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--labels", type=int, default=10_000, help="width of the random species head")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per model call (default: predict's)")
    parser.add_argument("--workdir", default="/tmp/avex_hub_memory", help="where test WAV files are written")
    parser.add_argument("--out", default="benchmarks/memory.json", help="JSON results")
    parser.add_argument("--child", nargs=2, metavar=("INPUT", "SECONDS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def rss_mib() -> float:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def signal(seconds: float, start: int = 0):
    """A deterministic modulated tone, float32, samples [start, start + seconds * RATE), made 60 s at a time
    (float64 temporaries of a whole 2 h signal would set the process's peak before predict runs)."""
    import numpy as np

    out = np.empty(round(seconds * RATE), np.float32)
    for i in range(0, out.size, 60 * RATE):
        t = (np.arange(i, min(i + 60 * RATE, out.size)) + start) / RATE
        out[i: i + t.size] = 0.1 * np.sin(2 * np.pi * 1000 * t) * (1 + np.sin(2 * np.pi * 0.3 * t))
    return out


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so that it measures from now on; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """VmHWM (peak RSS since the last reset) where Linux gives it, else the process's ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_wav(path: Path, seconds: float) -> None:
    """A 16 kHz mono PCM_16 WAV of ``seconds``, written 60 s at a time."""
    import soundfile as sf

    if path.exists():
        return
    partial = path.with_suffix(".partial.wav")
    with sf.SoundFile(partial, "w", RATE, 1, "PCM_16") as f:
        for start in range(0, round(seconds * RATE), 60 * RATE):
            f.write(signal(min(60.0, seconds - start / RATE), start))
    partial.replace(path)


def child(kind: str, seconds: float, args) -> dict:
    import torch

    from avex_hub.labels import LabelMap
    from avex_hub.encoder.model import AvexModel
    from avex_hub.hub.weights import get_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    entry = get_weights("esp_aves2_sl_beats_all")
    labels = LabelMap.from_names(f"species {i}" for i in range(args.labels))
    model = AvexModel(entry.config, label_map=labels, preprocessing=entry.preprocessing, name=entry.name)
    audio = str(Path(args.workdir) / f"{seconds:g}s.wav") if kind == "file" else signal(seconds)
    before, reset = rss_mib(), reset_peak()
    started = time.perf_counter()
    top = model.predict(audio, None if kind == "file" else RATE, top_k=1, batch_size=args.batch_size)[0]
    wall = time.perf_counter() - started
    return {"input": kind, "seconds": seconds, "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak_mib(), 1), "peak_since": "predict" if reset else "process start",
            "wall_s": round(wall, 2), "windows": -(-round(seconds * RATE) // round(entry.preprocessing.window_s * RATE)),
            "array_mib": 0.0 if kind == "file" else round(audio.nbytes / 2**20, 1),
            "best_window": [top.start_s, top.end_s]}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]), args)))
        return 0
    lengths = [float(x) for x in args.lengths.split(",")]
    inputs = args.inputs.split(",")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'input':6} {'length':>9} {'windows':>8} {'RSS before':>11} {'peak RSS':>9} {'array':>7} {'wall':>8}")
    for kind in inputs:
        for seconds in lengths:
            if kind == "file":
                write_wav(Path(args.workdir) / f"{seconds:g}s.wav", seconds)
            command = [sys.executable, __file__, "--child", kind, str(seconds), "--threads", str(args.threads),
                       "--labels", str(args.labels), "--workdir", args.workdir]
            command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"{kind} {seconds:g} s failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{kind:6} {seconds:>8g}s {row['windows']:>8} {row['rss_before_mib']:>8.0f} MiB "
                  f"{row['peak_rss_mib']:>5.0f} MiB {row['array_mib']:>4.0f} MiB {row['wall_s']:>7.1f}s", flush=True)
            Path(args.out).write_text(json.dumps({"machine": machine(), "threads": args.threads, "labels": args.labels,
                                                  "batch_size": args.batch_size or "default", "rows": rows},
                                                 indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
