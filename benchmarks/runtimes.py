"""Every runtime and precision, model alone and end to end through the CLI, in one command with ratios per round.

    python benchmarks/runtimes.py [--official-dir DIR] [--minutes 20] [--rounds 3] [--out benchmarks/RUNTIMES.md]
    python benchmarks/runtimes.py --quick          # 4 minutes of audio, 2 rounds, no memory sweep (a smoke run)

1. The machine: CPU, cores, torch threads, the fp32 and bf16 matmul peak (``speed.matmul_peak``), and the load
   average beside every part (this machine is shared; ratios are taken within a round so load hits all alike).
2. Model alone: the esp-aves2 architecture (fresh weights and a ``--labels`` head: speed does not depend on the
   values), batches of ``--batch-size`` 10 s windows (the CPU default, 2), one masked, through each pair's
   ``pooled_layers`` (the call ``avex-hub embed`` makes) in interleaved rounds: audio s / s, the ratio to torch fp32
   within each round (median, range) and, with ``--official-dir``, to the official avex 1.4.0 BEATs at fp32;
   pooled-embedding cosine and max|Δ| to torch fp32.
3. End to end: ``avex-hub embed`` on a generated folder of ``--minutes`` of audio (16 kHz WAV, 44.1 kHz stereo FLAC,
   48 kHz WAV) with the same weights, one process per run, the pairs in interleaved rounds: audio s / s, the ratio
   to the torch fp32 CLI per round, and the pipeline's cost over the runtime alone per round: the run's seconds less
   a one-second file's run (start-up, loading, cache check) against the same pair's model alone on as many windows
   (batches of ``--batch-size``), timed right after the run in the same round, so that one load weighs on both.
4. Peak memory against recording length per pair: ``avex-hub embed`` of one file of 1 and of 10 minutes (peak RSS
   of the process, from ``wait4``); flat means the ratio stays near 1.

Writes Markdown (``--out``) with the command, the machine and the load. Exports land in a scratch cache
(``AVEX_HUB_CACHE``), so the user's own is untouched; the first export per pair is made before any timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import avex_hub  # noqa: E402
from avex_hub.encoder.precision import inference_context  # noqa: E402
from avex_hub.encoder.runtimes import RUNTIMES, load_runtime  # noqa: E402
from speed import matmul_peak  # noqa: E402
from throughput import clips, cosine, machine  # noqa: E402

PAIRS = [(r, p) for r, ps in RUNTIMES.items() for p in ps]


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def full_size_model(labels: int):
    from avex_hub.hub.weights import get_weights
    from avex_hub.labels import LabelMap

    torch.manual_seed(0)
    entry = get_weights("esp_aves2_sl_beats_all")
    label_map = LabelMap.from_names(f"species {i}" for i in range(labels))
    return avex_hub.AvexModel(entry.config, label_map=label_map, preprocessing=entry.preprocessing, name=entry.name)


def write_checkpoint(model, folder: Path) -> Path:
    """``model`` as a ``--checkpoint`` folder: model.safetensors and label_map.json."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    (folder / "label_map.json").write_text(json.dumps({name: i for i, name in enumerate(model.labels)}))
    return folder


def runner(model, runtime: str, precision: str, threads: int):
    net = load_runtime(model, runtime, precision, threads=threads)

    def run(audio, mask):
        with inference_context(precision if runtime == "torch" else "fp32", "cpu"):
            return net.pooled_layers(audio, mask, layers=[model.num_layers]).float()[:, 0]

    return run


def _windows(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` 10 s windows, the last masked after 7.5 s (a file's last window)."""
    audio = clips(batch, 10.0)
    mask = torch.zeros(audio.shape, dtype=torch.bool)
    mask[-1, 120_000:] = True
    audio[mask] = 0.0
    return audio, mask


def model_alone(model, pairs, batch: int, rounds: int, threads: int, official_dir: str | None) -> dict:
    audio, mask = _windows(batch)
    runs = {}
    if official_dir:
        from official import official_embed, official_model

        official = official_model(model, official_dir)

        def run_official(a, m):  # unmasked rows give the official library its own best case
            with torch.inference_mode():
                return official_embed(official, a)

        runs["official fp32"] = run_official
    runs.update({f"{r} {p}": runner(model, r, p, threads) for r, p in pairs})
    first = {name: fn(audio, mask) for name, fn in runs.items()}  # warm-up (and any export) before timing
    times = {name: [] for name in runs}
    loads = [load()]
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(audio, mask)
            times[name].append(time.perf_counter() - start)
        loads.append(load())
    rows = []
    for name, t in times.items():
        row = {"mode": name, "audio_s_per_s": round(batch * 10 / min(t), 2), "seconds_per_window": min(t) / batch,
               **_ratios("x_torch_fp32", times["torch fp32"], t)}
        if "official fp32" in times:
            row.update(_ratios("x_official", times["official fp32"], t))
        if name != "official fp32":
            row["cosine"] = round(cosine(first[name], first["torch fp32"]), 6)
            row["max_abs_diff"] = float((first[name] - first["torch fp32"]).abs().max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "batch": batch, "rounds": rounds, "load": loads}


def _ratios(key: str, base: list[float], times: list[float]) -> dict:
    ratios = [b / t for b, t in zip(base, times)]
    return {f"{key}_median": round(statistics.median(ratios), 3), f"{key}_range": [round(min(ratios), 3),
                                                                                   round(max(ratios), 3)]}


def make_folder(folder: Path, minutes: float) -> float:
    """Recordings adding up to ``minutes``: 16 kHz mono WAV, 44.1 kHz stereo FLAC and 48 kHz WAV, 150 s each (the
    last shorter), harmonic calls over noise. Returns the seconds written."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    kinds = [(16000, 1, "wav"), (44100, 2, "flac"), (48000, 1, "wav")]
    total, i = minutes * 60, 0
    written = 0.0
    while written < total - 1e-6:
        seconds = min(150.0, total - written)
        rate, channels, ext = kinds[i % len(kinds)]
        calls = clips(channels, seconds * rate / 16000, seed=i).numpy().T  # [samples, channels]
        sf.write(folder / f"rec{i:03d}.{ext}", calls, rate)
        written += seconds
        i += 1
    return written


# The child reports its own peak: on Linux a child's ru_maxrss starts from its parent's peak (the kernel carries
# the high-water mark of the memory it replaced at exec, the parent's when Python spawns with vfork), and this
# parent holds the full-size model; VmHWM is the child's own memory map's high-water mark.
_CHILD = """import sys
from avex_hub.cli import main
code = main(sys.argv[1:])
try:
    print("VmHWM", [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0], file=sys.stderr)
except OSError:
    pass
sys.exit(code)
"""


def cli_run(argv: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB; the child's own ``VmHWM`` where /proc has it, else ``ru_maxrss``) of one
    ``avex-hub`` process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    error = process.stderr.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"avex-hub {' '.join(argv)} failed: {error[-2000:]}")
    peaks = [int(line.split()[1]) for line in error.splitlines() if line.startswith("VmHWM ")]
    return wall, (peaks[-1] if peaks else usage.ru_maxrss) / 1024


def end_to_end(model, pairs, checkpoint: Path, work: Path, minutes: float, rounds: int, threads: int, batch: int,
               env: dict) -> dict:
    folder, short = work / "folder", work / "short"
    seconds = make_folder(folder, minutes)
    make_folder(short, 1 / 60)
    windows = sum(-(-round(sf_seconds(p) * 16000) // 160_000) for p in sorted(folder.iterdir()))
    common = ["--checkpoint", str(checkpoint), "--no-progress", "--overwrite", "--threads", str(threads)]
    argv = {f"{r} {p}": ["--runtime", r, "--precision", p] for r, p in pairs}
    for name, extra in argv.items():  # exports and warm caches before timing
        cli_run(["embed", str(short), "--out", str(work / "warm.npz"), *common, *extra], env)
    alone = {f"{r} {p}": runner(model, r, p, threads) for r, p in pairs}
    audio, mask = _windows(batch)
    times, startup, model_s = ({name: [] for name in argv} for _ in range(3))
    loads = [load()]
    for _ in range(rounds):
        for name, extra in argv.items():
            times[name].append(cli_run(["embed", str(folder), "--out", str(work / "e.npz"), *common, *extra], env)[0])
            startup[name].append(cli_run(["embed", str(short), "--out", str(work / "s.npz"), *common, *extra], env)[0])
            start = time.perf_counter()
            for _ in range(-(-windows // batch)):
                alone[name](audio, mask)
            model_s[name].append(time.perf_counter() - start)
        loads.append(load())
    rows = []
    for name, t in times.items():
        costs = [(run - up) / m - 1 for run, up, m in zip(t, startup[name], model_s[name])]
        row = {"mode": name, "audio_s_per_s": round(seconds / min(t), 2), **_ratios("x_torch_fp32_cli",
                                                                                        times["torch fp32"], t),
               "startup_s": round(min(startup[name]), 2), "model_alone_s": round(min(model_s[name]), 1),
               "pipeline_cost_median": round(statistics.median(costs), 3),
               "pipeline_cost_range": [round(min(costs), 3), round(max(costs), 3)]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "seconds": seconds, "windows": windows, "rounds": rounds, "load": loads}


def sf_seconds(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def memory(pairs, checkpoint: Path, work: Path, threads: int, env: dict, lengths=(1.0, 10.0)) -> dict:
    out = {}
    for minutes in lengths:
        _one_file(work / f"len{minutes:g}", minutes)
    make_folder(work / "short", 1 / 60)
    for r, p in pairs:  # the exports first (end_to_end's warm-up, when it ran), so no peak below includes one
        cli_run(["embed", str(work / "short"), "--out", str(work / "warm.npz"), "--checkpoint", str(checkpoint),
                 "--no-progress", "--overwrite", "--runtime", r, "--precision", p], env)
    for r, p in pairs:
        peaks = [cli_run(["embed", str(work / f"len{m:g}"), "--out", str(work / "m.npz"), "--checkpoint",
                          str(checkpoint), "--no-progress", "--overwrite", "--threads", str(threads), "--runtime", r,
                          "--precision", p], env)[1] for m in lengths]
        out[f"{r} {p}"] = {"peak_mib": [round(x) for x in peaks], "ratio": round(peaks[-1] / peaks[0], 3)}
        print(json.dumps({"memory": f"{r} {p}", **out[f"{r} {p}"]}), flush=True)
    return {"lengths_min": list(lengths), "pairs": out, "load": load()}


def _one_file(folder: Path, minutes: float) -> None:
    """One 16 kHz WAV of ``minutes``, written a minute at a time."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(folder / "long.wav", "w", 16000, 1) as f:
        for i in range(int(minutes)):
            f.write(clips(1, 60.0, seed=i).numpy()[0])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 minutes of audio, 2 rounds, no memory sweep")
    p.add_argument("--pairs", default=",".join(f"{r}:{q}" for r, q in PAIRS), help="runtime:precision, comma list")
    p.add_argument("--batch-size", type=int, default=2, help="windows per model call (the CLI's CPU default, 2)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 2)")
    p.add_argument("--minutes", type=float, default=None, help="audio in the end-to-end folder (default 20)")
    p.add_argument("--labels", type=int, default=10_000, help="width of the random species head")
    p.add_argument("--threads", type=int, default=None, help="compute threads (default: every core)")
    p.add_argument("--official-dir", default=None, help="the official avex package (benchmarks/official.py)")
    p.add_argument("--memory-minutes", default="1,10", help="the recording lengths of the memory part, comma list")
    p.add_argument("--skip", default="", help="parts to skip: e2e, memory")
    p.add_argument("--out", default=str(HERE / "RUNTIMES.md"), help="Markdown results ('' to skip)")
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    minutes = args.minutes or (4.0 if args.quick else 20.0)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    torch.set_num_threads(threads)
    pairs = [tuple(x.split(":")) for x in args.pairs.split(",")]
    if ("torch", "fp32") not in pairs:
        pairs.insert(0, ("torch", "fp32"))
    work = Path(tempfile.mkdtemp(prefix="avex-runtimes-"))
    os.environ["AVEX_HUB_CACHE"] = str(work / "cache")  # this process's exports; the children inherit it
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    info = machine(torch.device("cpu"))
    info["load_at_start"] = load()
    kernels = {"fp32": matmul_peak(torch.float32, 4096, 3), "bf16": matmul_peak(torch.bfloat16, 4096, 3)}
    result = {"machine": info, "peak": {k: round(max(v.values()), 1) for k, v in kernels.items()}, "threads": threads,
              "pairs": pairs}
    print(json.dumps(result), flush=True)
    model = full_size_model(args.labels)
    result["alone"] = model_alone(model, pairs, args.batch_size, rounds, threads, args.official_dir)
    skip = set(args.skip.split(",")) if args.skip else set()
    if "e2e" not in skip or ("memory" not in skip and not args.quick):
        checkpoint = write_checkpoint(model, work / "checkpoint")
    if "e2e" not in skip:
        result["e2e"] = end_to_end(model, pairs, checkpoint, work, minutes, rounds, threads, args.batch_size, env)
    if "memory" not in skip and not args.quick:
        lengths = tuple(float(x) for x in args.memory_minutes.split(","))
        result["memory"] = memory(pairs, checkpoint, work, threads, env, lengths)
    result["machine"]["load_at_end"] = load()
    if args.out:
        Path(args.out).write_text(markdown(result, " ".join(sys.argv[1:] if argv is None else argv)))
    return result


def markdown(r: dict, argv: str) -> str:
    m = r["machine"]
    lines = ["# Runtimes against torch fp32 and the official library", "",
             f"`python benchmarks/runtimes.py {argv}`".replace(" `", "`"), "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {r['threads']} compute threads, torch {m['torch']}, "
             f"{m['date']}; matmul peak fp32 {r['peak']['fp32']:.0f}, bf16 {r['peak']['bf16']:.0f} GFLOP/s; load "
             f"average (1/5/15 min) {m['load_at_start']} at the start, {m['load_at_end']} at the end.", "",
             f"Model alone: batch {r['alone']['batch']} x 10 s (one window masked after 7.5 s), "
             f"{r['alone']['rounds']} interleaved rounds (load after each: {', '.join(r['alone']['load'])}); ratios "
             "per round, median (range).", "",
             "| mode | audio s / s | x torch fp32 | x official fp32 | pooled cosine vs torch fp32 | max abs diff |",
             "|---|---|---|---|---|---|"]
    for row in r["alone"]["rows"]:
        official = _cell(row, "x_official")
        lines.append(f"| {row['mode']} | {row['audio_s_per_s']} | {_cell(row, 'x_torch_fp32')} | {official} | "
                     f"{row.get('cosine', '-')} | {row.get('max_abs_diff', 0):.1e} |")
    if "e2e" in r:
        e = r["e2e"]
        lines += ["", f"End to end: `avex-hub embed` on {e['seconds'] / 60:.0f} min of audio ({e['windows']} windows; "
                  f"16 kHz WAV, 44.1 kHz stereo FLAC, 48 kHz WAV), {e['rounds']} interleaved rounds (load after each: "
                  f"{', '.join(e['load'])}). Pipeline cost per round: (run - a one-second file's run) / (the model alone "
                  "on as many windows, timed next to the run) - 1, median (range).", "",
                  "| mode | audio s / s | x torch fp32 CLI | start-up s | model alone s | pipeline cost |",
                  "|---|---|---|---|---|---|"]
        for row in e["rows"]:
            lo, hi = row["pipeline_cost_range"]
            lines.append(f"| {row['mode']} | {row['audio_s_per_s']} | {_cell(row, 'x_torch_fp32_cli')} | "
                         f"{row['startup_s']} | {row['model_alone_s']} | {row['pipeline_cost_median']:+.1%} "
                         f"({lo:+.1%}..{hi:+.1%}) |")
    if "memory" in r:
        mem = r["memory"]
        lines += ["", f"Peak RSS of `avex-hub embed` on one recording of {mem['lengths_min'][0]:g} and "
                  f"{mem['lengths_min'][1]:g} min (load {mem['load']}):", "",
                  "| mode | peak MiB | ratio |", "|---|---|---|"]
        for name, row in mem["pairs"].items():
            lines.append(f"| {name} | {' / '.join(map(str, row['peak_mib']))} | {row['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, key: str) -> str:
    if f"{key}_median" not in row:
        return "-"
    lo, hi = row[f"{key}_range"]
    return f"{row[f'{key}_median']:.2f} ({lo:.2f}..{hi:.2f})"


if __name__ == "__main__":
    main()
