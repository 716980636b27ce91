"""Throughput of avex-hub's BEATs against the reference implementation on identical weights, in one run.

    python benchmarks/throughput.py --reference-dir /path/to/beats [--torchaudio-dir DIR] [--device cpu|cuda]

Measures seconds of audio per second (10 s windows -> mean-pooled last-layer embedding) for avex-hub at
each precision and for the reference at fp32, timing the configurations in interleaved rounds so that
load on a shared machine affects them alike. Accuracy of each precision against the reference fp32:
cosine similarity of pooled embeddings (full-size architecture with fresh weights, and the beats-tiny
test checkpoint) and top-1 agreement of the tiny checkpoint's species head. Then end-to-end folder
throughput (decode + resample + windows + model, with DataLoader workers) against model-only
throughput on the same windows. Writes benchmarks/RESULTS.md. Without --reference-dir the ratios
are skipped and the script says how to get the reference.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

import avex_hub  # noqa: E402
from avex_hub.embed.inference import inference_settings, iter_file_results  # noqa: E402
from avex_hub.encoder.precision import (  # noqa: E402
    default_num_workers, inference_context, prepare_for_inference, resolve_device,
)
from reference import HOW_TO_GET, load_reference, reference_embed, reference_model  # noqa: E402

TINY = HERE.parent / "tests" / "fixtures" / "beats-tiny"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: 4 CPU, 64 CUDA)")
    p.add_argument("--batch-sizes", default="", help="CUDA: also sweep these batch sizes for bf16, e.g. 16,32,64,128")
    p.add_argument("--seconds", type=float, default=160.0, help="seconds of audio timed per configuration")
    p.add_argument("--window", type=float, default=10.0, help="window length in seconds (the model's 10 s)")
    p.add_argument("--precisions", default=None, help="comma list (default: fp32,bf16,int8 on CPU; fp32,bf16 on CUDA)")
    p.add_argument("--reference-dir", default=None, help="folder with the reference BEATs.py, backbone.py, modules.py")
    p.add_argument("--torchaudio-dir", default=None, help="a `pip install --no-deps --target` torchaudio folder")
    p.add_argument("--e2e-seconds", type=float, default=120.0, help="audio in the generated folder (0 skips)")
    p.add_argument("--e2e-precision", default="fp32")
    p.add_argument("--workers", default=None, help="DataLoader worker counts to try end to end, e.g. 0,1 "
                   "(default: 0 and avex-hub's default)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="results file ('' to skip writing)")
    return p.parse_args(argv)


def clips(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """``[n, samples]`` at 16 kHz: harmonic calls with vibrato over noise, different per clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 16000)) / 16000
    out = np.empty((n, t.size), np.float32)
    for i in range(n):
        f0, rate = rng.uniform(300, 3000), rng.uniform(1, 12)
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * rate * t))) / 16000
        calls = sum(np.sin(k * phase) / k for k in range(1, 4)) * (np.sin(2 * np.pi * rng.uniform(0.2, 2) * t) > 0)
        out[i] = 0.2 * calls + rng.uniform(0.005, 0.05) * rng.standard_normal(t.size)
    return torch.from_numpy(out)


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "avex-hub": avex_hub.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(runs: dict, batch: torch.Tensor, rounds: int, device: torch.device):
    """Best (lowest) seconds per batch of each named callable over ``rounds`` rounds taken in turn, after
    one warm-up each (so that load from other processes hits all alike), and each warm-up output."""
    first = {name: fn(batch) for name, fn in runs.items()}
    sync(device)
    best = dict.fromkeys(runs, math.inf)
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(batch)
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best, first


def ours(model, precision: str, device: torch.device):
    net = prepare_for_inference(model, precision, device)

    def run(audio):
        with inference_context(precision, device):
            return net.embed(audio.to(device)).float().cpu()

    return run


def reference_runner(ref, device: torch.device):
    ref = ref.to(device)

    def run(audio):
        with torch.inference_mode():
            return reference_embed(ref, audio.to(device)).float().cpu()

    return run


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float()).min())


def tiny_accuracy(beats, precisions: list[str], device: torch.device, window: float) -> dict[str, dict]:
    """Per precision vs the fp32 baseline: min cosine of pooled embeddings, top-1 agreement of the head,
    the largest logit change, and the largest baseline top-1 margin among the clips whose top-1 changed."""
    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=TINY)
    audio = clips(32, window, seed=7)
    if beats is not None:
        base = reference_runner(reference_model(beats, model), device)(audio)
    else:
        base = ours(model, "fp32", device)(audio)
    head = model.classifier
    with torch.inference_mode():  # the species head (on the CPU) applied to the baseline's pooled features
        base_logits = torch.nn.functional.linear(base, head.weight.detach().cpu(), head.bias.detach().cpu())
    top2 = base_logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    out = {}
    for p in precisions:
        net = prepare_for_inference(model, p, device)
        with inference_context(p, device):
            emb = net.embed(audio.to(device)).float().cpu()
            logits = net.logits(audio.to(device)).float().cpu()
        changed = logits.argmax(dim=1) != base_logits.argmax(dim=1)
        out[p] = {"cosine": cosine(emb, base), "top1": float((~changed).float().mean()),
                  "max_dlogit": float((logits - base_logits).abs().max()),
                  "flip_margin": float(margin[changed].max()) if bool(changed.any()) else None}
    return out


def end_to_end(model, precision: str, device: torch.device, batch_size: int, seconds: float,
               workers: list[int], window: float, rounds: int = 4) -> dict:
    """Folder throughput with each worker count vs the model alone on the same windows (best of ``rounds``
    interleaved passes each, so that load from other processes hits all alike)."""
    import soundfile as sf

    from avex_hub.audio.windows import stream_windows

    kinds = [(44100, 2, "flac"), (48000, 1, "wav"), (16000, 1, "wav"), (96000, 1, "flac")]
    per_file = 30.0
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(max(1, math.ceil(seconds / per_file))):
            sr, ch, ext = kinds[i % len(kinds)]
            rng = np.random.default_rng(i)
            t = np.arange(int(per_file * sr)) / sr
            tone = 0.2 * np.sin(2 * np.pi * rng.uniform(300, 4000) * t)[:, None]
            data = tone + 0.01 * rng.standard_normal((t.size, ch))
            path = os.path.join(tmp, f"rec{i:02d}_{sr}.{ext}")
            sf.write(path, data.astype(np.float32), sr)
            files.append(path)
        settings = inference_settings(model, "embed", window_s=window, precision=precision)
        windows = [w for f in files for w in stream_windows(f, window_s=window)]
        batches = [(torch.stack([w.audio for w in windows[i: i + batch_size]]),
                    torch.stack([w.padding_mask for w in windows[i: i + batch_size]]))
                   for i in range(0, len(windows), batch_size)]
        net = prepare_for_inference(model, precision, device)
        audio_s = sum(w.end_s - w.start_s for w in windows)
        best = {"model": 0.0, **{w: 0.0 for w in workers}}
        for _ in range(rounds):
            start = time.perf_counter()
            with inference_context(precision, device):
                for audio, mask in batches:
                    net.embed(audio.to(device), mask.to(device)).cpu()
            sync(device)
            best["model"] = max(best["model"], audio_s / (time.perf_counter() - start))
            for w in workers:
                start = time.perf_counter()
                rows = sum(r.num_windows for r in iter_file_results(model, files, settings, batch_size=batch_size,
                                                                    num_workers=w, device=device, progress=False))
                best[w] = max(best[w], audio_s / (time.perf_counter() - start))
                assert rows == len(windows), (rows, len(windows))
    return {"files": len(files), "audio_s": audio_s, "precision": precision, "model_only": best["model"],
            "end_to_end": {w: best[w] for w in workers}}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    precisions = (args.precisions or ("fp32,bf16,int8" if device.type == "cpu" else "fp32,bf16")).split(",")
    if device.type != "cpu" and "int8" in precisions:
        print("int8 (dynamic quantisation) runs on the CPU only; skipped on", device)
        precisions.remove("int8")
    batch_size = args.batch_size or (4 if device.type == "cpu" else 64)
    info = machine(device)
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))

    beats, kaldi_source = None, None
    if args.reference_dir:
        beats, kaldi_source = load_reference(args.reference_dir, args.torchaudio_dir)
        print("reference filterbank:", kaldi_source)
    else:
        print("no --reference-dir: ratios to the reference are skipped;", HOW_TO_GET)

    torch.manual_seed(0)
    model = avex_hub.build_model("esp_aves2_sl_beats_all", pretrained=False, num_classes=16)
    batch = clips(batch_size, args.window, seed=1)
    runs = {f"avex-hub {p}": ours(model, p, device) for p in precisions}
    if beats is not None:
        runs["reference fp32"] = reference_runner(reference_model(beats, model), device)
    rounds = max(2, math.ceil(args.seconds / (batch_size * args.window)))
    print(f"timing {list(runs)}: batch {batch_size} x {args.window:g} s, {rounds} interleaved rounds")
    per_batch, outputs = interleaved(runs, batch, rounds, device)
    base_name = "reference fp32" if beats is not None else "avex-hub fp32"
    tiny = tiny_accuracy(beats, precisions, device, args.window)
    rows = []
    for name, seconds in per_batch.items():
        speed = batch_size * args.window / seconds
        precision = name.split()[-1]
        row = {"implementation": name, "batch": batch_size, "audio_s_per_s": speed,
               "vs_reference_fp32": (speed * per_batch["reference fp32"] / (batch_size * args.window))
               if beats is not None else None,
               "cosine_full": cosine(outputs[name], outputs[base_name]),
               **(tiny.get(precision, {}) if name.startswith("avex") else {})}
        rows.append(row)
        print(row)

    sweep = []
    if device.type == "cuda" and args.batch_sizes:
        for size in (int(s) for s in args.batch_sizes.split(",")):
            secs = interleaved({"bf16": runs.get("avex-hub bf16", ours(model, "bf16", device))},
                               clips(size, args.window, seed=2), 3, device)[0]["bf16"]
            sweep.append({"batch": size, "audio_s_per_s": size * args.window / secs})
            print(sweep[-1])

    e2e = None
    if args.e2e_seconds > 0:
        workers = ([int(w) for w in args.workers.split(",")] if args.workers
                   else sorted({0, 1, default_num_workers(device)}))
        e2e = end_to_end(model, args.e2e_precision, device, batch_size, args.e2e_seconds, workers, args.window)
        print(e2e)
    if args.out:
        write_results(Path(args.out), info, rows, sweep, e2e, kaldi_source, base_name, argv or sys.argv[1:])
    return 0


def write_results(path: Path, info: dict, rows: list[dict], sweep: list[dict], e2e: dict | None,
                  kaldi_source: str | None, base_name: str, argv: list[str]) -> None:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = ["# Throughput", "", f"`python benchmarks/throughput.py {' '.join(argv)}`", "",
             "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), "",
             "Model-only: 10 s windows -> mean-pooled last-layer embedding, esp-aves2 BEATs architecture (90 M "
             "parameters, fresh weights copied into both implementations), best batch of interleaved rounds. "
             "Accuracy columns compare with "
             f"**{base_name}**: minimum cosine similarity of pooled embeddings (full model; beats-tiny test "
             "checkpoint) and top-1 agreement of the beats-tiny species head over 32 clips.", "",
             "| implementation | batch | audio s / s | x reference fp32 | cosine (full) | cosine (tiny) | top-1 (tiny) "
             "| max abs logit change (tiny) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['implementation']} | {r['batch']} | {r['audio_s_per_s']:.1f} | "
                     f"{fmt(r['vs_reference_fp32'], '.2f')} | {r['cosine_full']:.5f} | {fmt(r.get('cosine'), '.5f')} | "
                     f"{fmt(r.get('top1'), '.3f')} | {fmt(r.get('max_dlogit'), '.4f')} |")
    flips = [f"{r['implementation']}: {r['flip_margin']:.4f}" for r in rows if r.get("flip_margin") is not None]
    if flips:
        lines += ["", "Top-1 changes happen only at near-ties: the largest baseline margin between the first and "
                  "second logit among changed clips is " + "; ".join(flips) + " (the tiny head's logits are close "
                  "together; a margin below the max logit change can flip)."]
    if kaldi_source:
        lines += ["", f"Reference filterbank: {kaldi_source}. The reference computes it per clip, as it does."]
    if sweep:
        lines += ["", "CUDA bf16 batch-size sweep:", "", "| batch | audio s / s |", "|---|---|"]
        lines += [f"| {s['batch']} | {s['audio_s_per_s']:.1f} |" for s in sweep]
    if e2e:
        lines += ["", f"End to end ({e2e['precision']}): a generated folder of {e2e['files']} files "
                  f"({e2e['audio_s']:.0f} s; 44.1 kHz stereo FLAC, 48/16 kHz WAV, 96 kHz FLAC) decoded, resampled and "
                  "windowed by N DataLoader workers (0: in the main process, between batches) while the main process "
                  "runs the model; best of 4 interleaved passes each.", "",
                  "| workers | model only, audio s / s | end to end, audio s / s | end to end / model only |",
                  "|---|---|---|---|"]
        lines += [f"| {w} | {e2e['model_only']:.1f} | {v:.1f} | {v / e2e['model_only']:.2f} |"
                  for w, v in e2e["end_to_end"].items()]
    from avex_hub.embed.outputs import atomic_path

    with atomic_path(path, ".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
